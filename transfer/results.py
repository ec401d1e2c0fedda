"""Fine-tuning results on disk and in tables: one place that knows the ``seed_k/final_results.json`` layout.

A RUN_DIR is one pretrained model fine-tuned with one or several seeds: ``RUN_DIR/seed_k/final_results.json``,
or a single ``RUN_DIR/final_results.json``. Each file records the seed it ran with. Models are compared PAIRED by
seed (the same seed means the same data order and head initialisation): the per-seed differences, their mean
and a 95% Student-t confidence interval, and a verdict in words.
"""
import csv
import glob
import io
import json
import math
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple

from pretrain.runtime.files import atomic_write_json
from pretrain.runtime.provenance import provenance

METRICS = ("AP", "AP50", "AP75")
TASKS = ("bbox", "segm", "sem_seg")
# Scored by Detectron2's SemSegEvaluator: the segmentation transfer and the dense retrieval; the correspondence
# readout's own four; the others: METRICS
TASK_METRICS = {"sem_seg": ("mIoU", "mACC", "pACC"), "retrieval": ("mIoU", "mACC", "pACC"),
                "correspondence": ("C4_exact", "C4_within_one", "C5_exact", "C5_within_one")}
RESULTS_FILE = "final_results.json"


class ResultsError(ValueError):
    pass


def seed_count(text: str) -> int:
    """``--seeds K`` of every tool: K >= 1 runs seeds 0..K-1 (argparse type; 0 or a negative K is an error, not
    a silent no-op)."""
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        import argparse
        raise argparse.ArgumentTypeError(f"{text!r}: the number of seeds K (seeds 0..K-1) must be 1 or more")
    return count


def seed_dir(output_dir: str, seed: int) -> str:
    return os.path.join(output_dir, f"seed_{seed}")


def seed_runs(output_dir: str, seeds: int) -> List[Tuple[int, str, List[str]]]:
    """The runs of ``--seeds K``: seed k into OUTPUT_DIR/seed_k, as (k, its folder, its KEY VALUE overrides)."""
    return [(k, seed_dir(output_dir, k), ["SEED", str(k), "OUTPUT_DIR", seed_dir(output_dir, k)])
            for k in range(seeds)]


def write_final_results(output_dir: str, results: Dict, seed: int, weights: str, config: str,
                        origin: Optional[Dict] = None, **extra) -> str:
    """``output_dir/final_results.json``, atomically: the metrics, the seed, the weights, where the numbers came
    from (``origin``, default: this process's ``provenance()``) and the config."""
    path = os.path.join(output_dir, RESULTS_FILE)
    payload = {"results": results, "seed": seed, "weights": weights, **extra,
               "provenance": origin or provenance(), "config": config}
    atomic_write_json(path, payload)
    return path


def single_dataset(results: Dict) -> Dict[str, Dict[str, float]]:
    """One dataset per run: ``{dataset: {task: {metric: v}}}`` or ``{task: {metric: v}}`` -> the latter (tasks:
    bbox, segm, sem_seg)."""
    if results and all(isinstance(v, dict) and set(v) <= set(TASKS) for v in results.values()):
        return next(iter(results.values()))
    return results


def load_runs(run_dir: str) -> Dict[int, Dict]:
    """``{seed: {task: {metric: value}}}`` for every finished seed of a run directory."""
    return {seed: single_dataset(data["results"]) for seed, data in read_results(run_dir).items()}


def evaluation_of(run_dir: str) -> Optional[str]:
    """What the runs of ``run_dir`` measured (metric, files scored, split), as one canonical string; None when
    their files do not say (written before it was recorded). Seeds evaluated differently are an error."""
    found = {json.dumps(data.get("evaluation"), sort_keys=True) for data in read_results(run_dir).values()}
    if len(found) > 1:
        raise ResultsError(f"{run_dir}: its seeds were evaluated differently: {sorted(found)}")
    only = found.pop()
    return None if only == "null" else only


# Keys in which the seeds of one row may differ: the seed itself and the folder it wrote to.
PER_SEED_KEYS = ("SEED", "OUTPUT_DIR")


def check_one_config(run_dir: str) -> None:
    """The seeds of a row ran one config (their ``final_results.json`` record it): a row mixing two recipes, say
    SOLVER.MAX_ITER 4 and 6, is refused with the keys that differ."""
    import yaml

    from pretrain.config import flat_keys
    configs = {}
    for seed, data in read_results(run_dir).items():
        config = data.get("config")
        if isinstance(config, str):
            config = yaml.safe_load(config)
        if isinstance(config, dict):
            configs[seed] = {k: v for k, v in flat_keys(config).items() if k not in PER_SEED_KEYS}
    if len(configs) < 2:
        return
    (first, reference), *others = sorted(configs.items())
    for seed, config in others:
        keys = sorted(k for k in set(reference) | set(config) if reference.get(k) != config.get(k))
        if keys:
            listed = "; ".join(f"{k}: {reference.get(k)!r} (seed {first}) vs {config.get(k)!r} (seed {seed})"
                               for k in keys[:5])
            raise ResultsError(f"{run_dir}: its seeds ran different configs ({listed}); a row holds the seeds of "
                               "one config: put the other runs in their own folder")


def check_one_start(run_dir: str) -> None:
    """The seeds of a row started from the same weights and ran in one numerics mode (as their
    ``final_results.json`` record them): a seed trained before the weights file at the same path was replaced, or
    in another mode, is refused, naming both."""
    for key, what in (("weights_sha256", "weights (sha256)"), ("numerics_modes", "numerics modes")):
        found = {seed: data.get(key) for seed, data in read_results(run_dir).items() if data.get(key) is not None}
        if len({json.dumps(v) for v in found.values()}) > 1:
            listed = "; ".join(f"seed {s}: {str(v)[:16]}" for s, v in sorted(found.items()))
            raise ResultsError(f"{run_dir}: its seeds started from different {what} ({listed}); a row holds the "
                               "seeds of one start: rerun the others in their own folder")


def read_results(run_dir: str) -> Dict[int, Dict]:
    """``{seed: the parsed final_results.json}`` of a run directory (``seed_*/`` or the folder itself)."""
    paths = sorted(glob.glob(os.path.join(run_dir, "seed_*", RESULTS_FILE)))
    if not paths and os.path.exists(os.path.join(run_dir, RESULTS_FILE)):
        paths = [os.path.join(run_dir, RESULTS_FILE)]
    if not paths:
        raise FileNotFoundError(f"{run_dir}: no {RESULTS_FILE} (in seed_*/ or the folder itself)")
    runs = {}
    for path in paths:
        try:
            with open(path) as f:
                data = json.load(f)
            data["results"]
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as e:
            raise ResultsError(f"{path}: not a train_net results file ({e})") from None
        folder = re.search(r"seed_(\d+)$", os.path.dirname(path))
        seed = data.get("seed", int(folder.group(1)) if folder else 0)
        if seed in runs:
            raise ResultsError(f"{path}: seed {seed} appears twice in {run_dir}")
        runs[int(seed)] = data
    return runs


def mean_std(values: Sequence[float]):
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return mean, std, n


def values_of(runs: Dict[int, Dict], column: str) -> Dict[int, float]:
    task, metric = column.split("/")
    return {s: float(r[task][metric]) for s, r in runs.items() if task in r and metric in r[task]}


def tasks_of(runs: Dict[int, Dict]) -> List[str]:
    """The tasks of the runs, Detectron2's first (bbox, segm, sem_seg), then the others (the dense probe's
    ``dense``)."""
    found = {task for r in runs.values() for task in r}
    return [t for t in TASKS if t in found] + sorted(found - set(TASKS))


def summarise(run_dirs: Sequence[str], names: Optional[Sequence[str]] = None) -> List[Dict]:
    """One row per model: name, n, seeds, and ``{column: (mean, std or None)}`` for every metric present."""
    rows = []
    for i, run_dir in enumerate(run_dirs):
        check_one_config(run_dir)
        check_one_start(run_dir)
        runs = load_runs(run_dir)
        row = {"model": names[i] if names else os.path.basename(os.path.normpath(run_dir)), "n": len(runs),
               "seeds": sorted(runs), "runs": runs, "evaluation": evaluation_of(run_dir)}
        for task in tasks_of(runs):
            for metric in TASK_METRICS.get(task, METRICS):
                values = values_of(runs, f"{task}/{metric}")
                if values and len(values) == len(runs):
                    row[f"{task}/{metric}"] = mean_std(list(values.values()))[:2]
        rows.append(row)
    return rows


def paired(runs: Dict[int, Dict], baseline: Dict[int, Dict], column: str) -> Optional[Dict]:
    """Model minus baseline over the seeds both have: per-seed differences, their mean, the 95% Student-t CI
    (None at n = 1), a verdict, and the smallest true difference these seeds would detect (``detectable``: a
    two-sided paired t-test at 95% with 80% power, at the observed spread of the differences). None when they
    share no seed."""
    from scipy import stats
    a, b = values_of(runs, column), values_of(baseline, column)
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    diffs = [a[s] - b[s] for s in seeds]
    mean, std, n = mean_std(diffs)
    ci = detectable = None
    verdict = "n = 1: no spread, no verdict"
    if n > 1:
        half = stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)
        ci = (mean - half, mean + half)
        verdict = "better" if ci[0] > 0 else "worse" if ci[1] < 0 else "not distinguishable at 95%"
        detectable = (stats.t.ppf(0.975, n - 1) + stats.t.ppf(0.8, n - 1)) * std / math.sqrt(n)
    return {"seeds": seeds, "differences": diffs, "mean": mean, "ci95": ci, "n": n, "verdict": verdict,
            "detectable": detectable}


def compare(rows: List[Dict], baseline: str, skip: Sequence[str] = ()) -> List[Dict]:
    """Paired comparisons of every other row (except those named in ``skip``) against the row ``baseline``."""
    base = [r for r in rows if r["model"] == baseline]
    if not base:
        raise ResultsError(f"--baseline {baseline}: no such model (models: {[r['model'] for r in rows]})")
    out = []
    for row in rows:
        if row is base[0] or row["model"] in skip:
            continue
        known = None not in (row.get("evaluation"), base[0].get("evaluation"))
        if known and row["evaluation"] != base[0]["evaluation"]:
            raise ResultsError(f"{row['model']} and {baseline} were not evaluated alike, their numbers cannot be "
                               f"paired: {row['model']}: {row['evaluation']}; {baseline}: {base[0]['evaluation']}")
        for column in columns_of([row]):
            result = paired(row["runs"], base[0]["runs"], column)
            if result is not None:
                out.append({"model": row["model"], "baseline": baseline, "metric": column, **result})
    return out


def columns_of(rows: List[Dict]) -> List[str]:
    columns = []
    for row in rows:
        columns += [k for k in row if "/" in k and k not in columns]
    return columns


def cell(mean: float, std: Optional[float]) -> str:
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def to_markdown(rows: List[Dict]) -> str:
    """Mean ± sample std over seeds; the mean alone at n = 1 (one run shows no spread)."""
    columns = columns_of(rows)
    lines = ["| model | n | seeds | " + " | ".join(columns) + " |", "|---|---|---|" + "---|" * len(columns)]
    for row in rows:
        cells = [cell(*row[c]) if c in row else "-" for c in columns]
        seeds = ",".join(map(str, row["seeds"]))
        lines.append(f"| {row['model']} | {row['n']} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def comparisons_to_markdown(comparisons: List[Dict]) -> str:
    lines = ["| model | baseline | metric | n | mean difference | 95% CI | verdict | detectable (80% power) | "
             "per-seed differences |", "|---|---|---|---|---|---|---|---|---|"]
    for c in comparisons:
        ci = f"[{c['ci95'][0]:+.2f}, {c['ci95'][1]:+.2f}]" if c["ci95"] else "-"
        detectable = f"{c['detectable']:.2f}" if c.get("detectable") is not None else "-"
        diffs = ", ".join(f"{s}: {d:+.2f}" for s, d in zip(c["seeds"], c["differences"]))
        lines.append(f"| {c['model']} | {c['baseline']} | {c['metric']} | {c['n']} | {c['mean']:+.2f} | {ci} | "
                     f"{c['verdict']} | {detectable} | {diffs} |")
    return "\n".join(lines) + "\n"


def to_csv(rows: List[Dict], comparisons: Sequence[Dict] = ()) -> str:
    columns = columns_of(rows)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["model", "n", "seeds"] + [f"{c} {s}" for c in columns for s in ("mean", "std")])
    for row in rows:
        values = []
        for c in columns:
            mean, std = row.get(c, (None, None))
            values += ["" if mean is None else f"{mean:.4f}", "" if std is None else f"{std:.4f}"]
        writer.writerow([row["model"], row["n"], " ".join(map(str, row["seeds"]))] + values)
    if comparisons:
        writer.writerow([])
        writer.writerow(["model", "baseline", "metric", "n", "mean difference", "ci95 low", "ci95 high", "verdict"])
        for c in comparisons:
            low, high = c["ci95"] or ("", "")
            writer.writerow([c["model"], c["baseline"], c["metric"], c["n"], f"{c['mean']:.4f}",
                             low if low == "" else f"{low:.4f}", high if high == "" else f"{high:.4f}", c["verdict"]])
    return out.getvalue()


def to_json(rows: List[Dict], comparisons: Sequence[Dict] = (), tile_bootstrap: Sequence[Dict] = ()) -> str:
    table = [{k: v for k, v in row.items() if k != "runs"} for row in rows]
    for row, source in zip(table, rows):
        row["per_seed"] = {str(s): r for s, r in source["runs"].items()}
    payload = {"models": table, "comparisons": list(comparisons)}
    if tile_bootstrap:
        payload["tile_bootstrap"] = list(tile_bootstrap)
    return json.dumps(payload, indent=2) + "\n"
