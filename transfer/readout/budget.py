"""The report of ``tools/budget_curve.py``: minutes per iteration of a pretraining run, and the budget curve (dense
probe of every checkpoint against random init) as Markdown and as a picture."""
import os
import statistics

from pretrain.runtime.files import atomic_write, read_jsonl


def seconds_per_iteration(run_dir: str) -> float:
    times = [r["time"] for r in read_jsonl(os.path.join(run_dir, "metrics.jsonl")) if r.get("iteration", 0) > 1]
    if not times:
        raise ValueError(f"{run_dir}: no metrics.jsonl rows to time the iterations by")
    return statistics.median(times)


def plot(rows, minutes, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.8))
    base = rows[0]
    ax.axhspan(base["AP"] - base["std"], base["AP"] + base["std"], color="grey", alpha=0.2)
    ax.axhline(base["AP"], color="grey", label="random init (band: std over seeds)")
    for name in dict.fromkeys(r["model"] for r in rows[1:]):
        own = [r for r in rows[1:] if r["model"] == name]
        ax.errorbar([r["iteration"] * minutes[name] for r in own], [r["AP"] for r in own],
                    yerr=[r["std"] for r in own], marker="o", capsize=3, label=name)
    ax.set(xlabel="pretraining minutes (ResNet-18, this CPU)", ylabel="dense probe AP (trees, C4)",
           title="What pretraining time buys")
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)


def curve_markdown(rows, minutes) -> str:
    lines = ["| backbone | iterations | minutes | dense AP | - random init | 95% CI | verdict |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        d = r.get("difference")
        ci = f"[{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]" if d and d["ci95"] else "-"
        mins = f"{r['iteration'] * minutes.get(r['model'], 0):.1f}"
        lines.append(f"| {r['model']} | {r['iteration']} | {mins} | {r['AP']:.2f} ± {r['std']:.2f} | "
                     f"{d['mean']:+.2f} | {ci} | {d['verdict']} |" if d else
                     f"| {r['model']} | 0 | 0 | {r['AP']:.2f} ± {r['std']:.2f} | - | - | - |")
    return "\n".join(lines) + "\n"
