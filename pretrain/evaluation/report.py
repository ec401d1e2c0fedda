"""The Markdown of the matching studies (``tools/eval_matching.py``): every matcher's accuracy on one set of pairs,
and the ablation of the Hough matchers' options, each row with the overrides that make it."""
from typing import Dict, List, Sequence, Tuple

from pretrain.config import load_config
from pretrain.evaluation.accuracy import ABLATION, Variant
from pretrain.matchers import MATCHERS, options_from_cfg
from pretrain.runtime.files import atomic_write_json, atomic_write_text
from pretrain.runtime.provenance import provenance


def fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def accuracy_markdown(result: Dict) -> str:
    """One row per registered matcher: exact, within one cell, sub-cell error, by orientation."""
    lines = ["| matcher | exact | within one | median error | mean error | within one, same orientation | "
             "mirrored |", "|---|---|---|---|---|---|---|"]
    for name in MATCHERS:
        exact, near, error = (result[k][name] for k in ("exact", "within_one", "error"))
        err = error["all"] or {"median": None, "mean": None}
        lines.append(f"| {name}: {MATCHERS[name].label} | {fmt(exact['all'])} | {fmt(near['all'])} | "
                     f"{fmt(err['median'])} | {fmt(err['mean'])} | {fmt(near['same_orientation'])} | "
                     f"{fmt(near['mirrored'])} |")
    for name, stats in result["matcher_stats"].items():
        lines += [f"{name} {key}: {value:.3f}" for key, value in stats.items()]
    return "\n".join(lines)


def accuracy_text(result: Dict, pairs: int, tolerance=None) -> str:
    """What tools/eval_matching.py prints: the counts, the table and (``tolerance`` 0 or 1) one summary line."""
    counts = result["counts"]
    lines = [f"{pairs} view pairs of {counts['images']} images, grid {counts['grid']}, "
             f"{counts['query_cells_with_partner']} query cells with a true partner", accuracy_markdown(result)]
    if tolerance is not None:
        key = "exact" if tolerance == 0 else "within_one"
        lines.append(f"{key}: " + ", ".join(f"{name} {fmt(result[key][name]['all'])}" for name in MATCHERS))
    return "\n".join(lines)


def ablation_variants(config_file: str, opts: Sequence[str]) -> Tuple[Dict[str, Variant], Dict[str, List[str]]]:
    """Every row of ABLATION, and the baselines and the oracle beside them: (variants, each one's overrides)."""
    variants, overrides = {}, {}
    for name, (matcher, extra) in ABLATION.items():
        cfg = load_config(config_file, list(opts) + extra)
        variants[name], overrides[name] = (matcher, options_from_cfg(cfg.MODEL, matcher)), extra
    cfg = load_config(config_file, list(opts))
    for name in ("argmax", "threshold", "geometric"):
        variants[name], overrides[name] = (name, options_from_cfg(cfg.MODEL, name)), []
    return variants, overrides


def summary(result: Dict, name: str) -> Dict:
    error = result["error"][name]["all"] or {"median": float("nan"), "mean": float("nan")}
    return {"exact": result["exact"][name]["all"], "within_one": result["within_one"][name]["all"],
            "median_error": error["median"], "mean_error": error["mean"]}


def ablation_rows(result: Dict, variants: Dict[str, Variant], overrides: Dict[str, List[str]]) -> Dict:
    return {name: {"matcher": variants[name][0], "overrides": overrides[name], **summary(result, name),
                   **result["matcher_stats"][name]} for name in variants}


def ablation_markdown(rows: Dict, result: Dict, weights, command: str) -> str:
    grid = result["counts"]["grid"]
    lines = [f"ResNet-{result['settings']['depth']}, {'weights ' + weights if weights else 'random init'}, "
             f"C5 ({grid[0]} x {grid[1]}), {result['counts']['pairs']} view pairs, "
             f"{result['counts']['query_cells_with_partner']} query cells with a true partner; `{command}`", "",
             "| matcher and options | exact | within one | median error | mean error | cells outside the key view "
             "(hough_transform) | overrides |", "|---|---|---|---|---|---|---|"]
    for name, row in rows.items():
        outside = f"{row['outside_share']:.3f}" if "outside_share" in row else "-"
        lines.append(f"| {name} | {row['exact']:.3f} | {row['within_one']:.3f} | {row['median_error']:.2f} | "
                     f"{row['mean_error']:.2f} | {outside} | {' '.join(row['overrides']) or '(nothing)'} |")
    return "\n".join(lines) + "\n"


def write_study(out: str, study: Dict, table: str = "") -> None:
    """``study`` with the run's provenance as JSON at ``out``; ``table`` (printed) also at ``out.md``."""
    if table:
        print(table)
        atomic_write_text(out + ".md", table)
    atomic_write_json(out, {**study, "provenance": provenance()})
    print(f"wrote {out}" + (f" and {out}.md" if table else ""))
