"""The controls of positive selection over a budget curve, and the rule that decides whether a regime can rank it.

Each regime is one ``tools/demo.py --methods densecl geometric_oracle random_positives ...`` folder (a pretraining
length, a corpus, a loss), whose readouts pair by pretraining seed: ``{readout}_{model}/seed_k/final_results.json``.
For every regime and readout, three paired differences with their 95% intervals: oracle - argmax, oracle - random
and argmax - random (its sign is reported, not assumed). Where a regime also pretrained MoCo-v2 (``--methods ...
mocov2``), what the dense loss adds to a global one: argmax - MoCo-v2 and oracle - MoCo-v2, in a table of their own.

The rule, stated before the runs (docs/results.md section 4): a regime passes on a readout when the oracle is ahead
of argmax AND ahead of random positives there, both paired 95% intervals above zero, over at least 10 pretraining
seeds. A pass on a transfer readout (dense retrieval, the dense probe) lets the regime rank HoughCL; a pass on the
correspondence readout alone supports only the narrower claim that the positives teach better-matching features.
"""
import glob
import json
import os
import re
import statistics
from typing import Dict, List, Optional, Sequence

from pretrain.runtime.files import atomic_write, atomic_write_text
from transfer.results import load_runs, paired

# readout -> (its folder prefix in a regime's output, the column it is read by, transfer or not)
READOUTS = {
    "correspondence C5": ("correspondence", "correspondence/C5_exact", False),
    "correspondence C4": ("correspondence", "correspondence/C4_exact", False),
    "dense retrieval": ("retrieval", "retrieval/mIoU", True),
    "dense probe": ("dense", "dense/AP", True),
}
CONTRASTS = (("geometric_oracle", "densecl"), ("geometric_oracle", "random_positives"),
             ("densecl", "random_positives"))
REFERENCE = (("densecl", "mocov2"), ("geometric_oracle", "mocov2"))  # the dense loss against a global one
LABELS = {"geometric_oracle": "oracle", "densecl": "argmax", "random_positives": "random", "mocov2": "MoCo-v2"}
MIN_SEEDS = 10


def regime_contrasts(out: str) -> Dict[str, Dict[str, Optional[Dict]]]:
    """``{readout: {"oracle - argmax": paired(...), ...}}`` of one regime's folder (None where a side is absent)."""
    found = {}
    for readout, (prefix, column, _) in READOUTS.items():
        found[readout] = {}
        for model, baseline in CONTRASTS + REFERENCE:
            paths = [os.path.join(out, f"{prefix}_{m}") for m in (model, baseline)]
            name = f"{LABELS[model]} - {LABELS[baseline]}"
            found[readout][name] = paired(load_runs(paths[0]), load_runs(paths[1]), column) if all(
                os.path.isdir(p) for p in paths) else None
    return found


def verdict(contrasts: Dict[str, Optional[Dict]]) -> str:
    """The rule on one readout of one regime."""
    both = [contrasts.get("oracle - argmax"), contrasts.get("oracle - random")]
    if any(c is None for c in both):
        return "not measured"
    n = min(c["n"] for c in both)
    ahead = all(c["ci95"] is not None and c["ci95"][0] > 0 for c in both)
    if n < MIN_SEEDS:
        return f"pilot (n = {n}): {'both ahead' if ahead else 'not both ahead'}; the rule needs {MIN_SEEDS} seeds"
    return "passes" if ahead else "fails"


def cell(c: Optional[Dict]) -> str:
    if c is None:
        return "-"
    if c["ci95"] is None:
        return f"{c['mean']:+.2f} (n = 1)"
    return f"{c['mean']:+.2f} [{c['ci95'][0]:+.2f}, {c['ci95'][1]:+.2f}] (n = {c['n']})"


def curve_markdown(regimes: Dict[str, Dict], iterations: Dict[str, int]) -> str:
    lines = ["| regime | iterations | readout | oracle - argmax | oracle - random | argmax - random | the rule |",
             "|---|---|---|---|---|---|---|"]
    for name, found in regimes.items():
        for readout, contrasts in found.items():
            if all(c is None for c in contrasts.values()):
                continue
            lines.append(f"| {name} | {iterations[name]} | {readout} | " + " | ".join(
                cell(contrasts[f"{LABELS[m]} - {LABELS[b]}"]) for m, b in CONTRASTS) + f" | {verdict(contrasts)} |")
    return "\n".join(lines) + "\n"


def reference_markdown(regimes: Dict[str, Dict], iterations: Dict[str, int]) -> str:
    """argmax - MoCo-v2 and oracle - MoCo-v2 where a regime has MoCo-v2; "" where none has."""
    names = [f"{LABELS[m]} - {LABELS[b]}" for m, b in REFERENCE]
    rows = [f"| {name} | {iterations[name]} | {readout} | " + " | ".join(cell(contrasts[n]) for n in names) + " |"
            for name, found in regimes.items() for readout, contrasts in found.items()
            if any(contrasts[n] is not None for n in names)]
    if not rows:
        return ""
    header = [f"| regime | iterations | readout | {' | '.join(names)} |", "|---|---|---|---|---|"]
    return "\n".join(header + rows) + "\n"


def dense_fit(out: str) -> List[Dict]:
    """Whether the dense loss is fit at all: per method, over its pretraining runs in ``out``, the last logged
    ``loss_dense`` and ``pos_sim_dense`` (the similarity of the chosen positives) and ``acc_positives`` (how often
    they lie within one cell of the true partner). An oracle whose positives stay dissimilar is not being fit."""
    runs: Dict[str, List[Dict]] = {}
    for path in sorted(glob.glob(os.path.join(out, "pretrain_*_seed*", "metrics.jsonl"))):
        if not os.path.exists(os.path.join(os.path.dirname(path), "backbone.pth")):
            continue  # a run still going, or stopped: not its last iteration
        method = re.search(r"pretrain_(.+)_seed\d+", path).group(1)
        with open(path) as f:
            rows = [json.loads(line) for line in f if line.strip().endswith("}")]
        if rows and "loss_dense" in rows[-1]:
            runs.setdefault(method, []).append(rows[-1])
    found = []
    for method, last in runs.items():
        row = {"method": method, "n": len(last), "iteration": last[0]["iteration"]}
        for key in ("loss_dense", "pos_sim_dense", "acc_positives"):
            values = [r[key] for r in last if key in r]
            row[key] = (statistics.mean(values), statistics.stdev(values) if len(values) > 1 else None)
        found.append(row)
    return found


def fit_markdown(regimes: Dict[str, List[Dict]]) -> str:
    lines = ["| regime | method | n | iteration | loss_dense | pos_sim_dense | acc_positives |",
             "|---|---|---|---|---|---|---|"]
    for name, rows in regimes.items():
        for r in rows:
            cells = [f"{r[k][0]:.3f}" + (f" ± {r[k][1]:.3f}" if r[k][1] is not None else "")
                     for k in ("loss_dense", "pos_sim_dense", "acc_positives")]
            lines.append(f"| {name} | {r['method']} | {r['n']} | {r['iteration']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_curves(regimes: Dict[str, Dict], iterations: Dict[str, int], readout: str, path: str) -> None:
    """One figure per readout: the three contrasts with their 95% intervals against pretraining iterations, or,
    where regimes share a length (levers at one length), against the regimes, in their order."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(regimes)
    by_length = len(set(iterations[r] for r in names)) == len(names)
    position = {r: iterations[r] if by_length else i for i, r in enumerate(names)}
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.axhline(0.0, color="grey", lw=0.8)
    for k, (model, baseline) in enumerate(CONTRASTS):
        name = f"{LABELS[model]} - {LABELS[baseline]}"
        points = sorted(((position[r], regimes[r][readout][name]) for r in names
                         if regimes[r][readout].get(name) is not None), key=lambda point: point[0])
        if not points:
            continue
        # side by side: on a log axis of lengths, or around each regime's place
        xs = [x * (1 + 0.04 * (k - 1)) if by_length else x + 0.08 * (k - 1) for x, _ in points]
        means = [c["mean"] for _, c in points]
        errors = [[c["mean"] - c["ci95"][0] if c["ci95"] else 0 for _, c in points],
                  [c["ci95"][1] - c["mean"] if c["ci95"] else 0 for _, c in points]]
        ax.errorbar(xs, means, yerr=errors, marker="o", capsize=3, label=name, ls="-" if by_length else "none")
    if by_length:
        ax.set_xscale("log")
        ax.set_xlabel("pretraining iterations (ResNet-18, batch 16, 112 px)")
    else:
        ax.set_xticks(range(len(names)), names, fontsize=7)
        ax.set_xlim(-0.5, len(names) - 0.5)
    ax.set(ylabel=f"paired difference: {readout}",
           title=f"Does the choice of positives reach the backbone?\n({readout})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)


def write_curve(outs: Sequence[str], names: Sequence[str], iterations: Sequence[int], prefix: str) -> List[str]:
    """The table (PREFIX.md) and one figure per readout (PREFIX_<readout>.png) over the regimes' folders."""
    regimes = {name: regime_contrasts(out) for name, out in zip(names, outs)}
    its = dict(zip(names, iterations))
    written = [prefix + ".md"]
    fits = {name: dense_fit(out) for name, out in zip(names, outs)}
    reference = reference_markdown(regimes, its)
    if reference:
        reference = f"\nWhat the dense loss adds to MoCo-v2's global one, paired by pretraining seed:\n\n{reference}"
    text = (curve_markdown(regimes, its) + reference + "\nWhether the dense loss is fit (each method's runs, their "
            "last logged iteration, mean ± std over pretraining seeds):\n\n" + fit_markdown(fits))
    atomic_write_text(written[0], text)
    for readout in READOUTS:
        if any(any(c is not None for c in regimes[r][readout].values()) for r in regimes):
            path = f"{prefix}_{readout.replace(' ', '_')}.png"
            plot_curves(regimes, its, readout, path)
            written.append(path)
    return written
