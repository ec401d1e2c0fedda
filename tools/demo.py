#!/usr/bin/env python
"""`make demo`: the whole toolkit on real images on a CPU, within 20 minutes; ends with output/demo/report.md.

fetch real data -> pretrain HoughCL and DenseCL (ResNet-18) -> convert with --verify -> matching accuracy at C5
and a correspondence picture -> on the tree tiles, from random init, HoughCL and DenseCL: the dense linear probe,
the frozen-backbone detection probe (Faster R-CNN R18-FPN) and, with --finetune-seeds, full fine-tuning, over
fixed seeds -> tables with paired comparisons against random init and against DenseCL -> report.md. One line per
stage (elapsed, ETA), full logs under output/demo/logs/. Every seed is fixed: a rerun prints the same numbers.
A rerun skips the stages whose output exists and whose inputs did not change (``--force`` redoes them).
"""
import argparse
import json
import os
import sys

from pretrain.engine import plot_metrics
from pretrain.matching import MATCHERS, list_matchers
from transfer.results import RESULTS_FILE, seed_dir
from transfer.stages import Stages, last_iteration

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable
TREES = ["--voc", "trees_train", "datasets/trees", "train", "--voc", "trees_test", "datasets/trees", "test"]
# HoughCL as the paper describes it (the `hough` matcher) against its baseline DenseCL.
METHODS = {"houghcl": ["MODEL.MATCHER", "hough"], "densecl": ["MODEL.MATCHER", "argmax"]}
# --study adds, with the same pretraining budget each: this toolkit's estimated-geometry extension beside the
# oracle it approximates and PixPro-style positives, and MoCo-v2.
STUDY = {**METHODS, "hough_transform": ["MODEL.MATCHER", "hough_transform"],
         "geometric_oracle": ["MODEL.MATCHER", "geometric"], "pixpro_style": ["MODEL.MATCHER", "threshold"],
         "mocov2": ["MODEL.LOSS_LAMBDA", 0.0]}
DETECTION = {"finetune": "configs/transfer/tiny/trees_R_18_FPN_cpu.yaml",
             "probe": "configs/transfer/tiny/trees_R_18_FPN_probe_cpu.yaml"}


def tool(name, *args):
    return [PYTHON, os.path.join("tools", name), *map(str, args)]


def matching_rows(out, names):
    """Exact / within-one accuracy of every registered matcher, one row per backbone."""
    matchers = list_matchers()
    rows = ["| backbone | " + " | ".join(matchers) + " |", "|---|" + "---|" * len(matchers)]
    for name in names:
        with open(os.path.join(out, f"matching_{name}.json")) as f:
            r = json.load(f)
        rows.append(f"| {name} | " + " | ".join(f"{r['exact'][m]['all']:.3f} / {r['within_one'][m]['all']:.3f}"
                                                for m in matchers) + " |")
    legend = "; ".join(f"{m}: {MATCHERS[m].label}" for m in matchers)
    return "\n".join(rows) + f"\n\nEach cell: exact / within one cell. {legend}."


def spread_rows(out, models, kinds):
    """Seed-to-seed std of each measurement side by side (the noise each one has at this scale)."""
    columns = {"dense": "dense/AP", "probe": "bbox/AP", "finetune": "bbox/AP"}
    found = {}
    for kind in ("dense", *kinds):
        with open(f"{out}/{kind}_table.json") as f:
            found[kind] = {r["model"]: r.get(columns[kind]) for r in json.load(f)["models"]}
    titles = {"dense": "dense probe AP", "probe": "detection probe bbox AP", "finetune": "full fine-tuning bbox AP"}
    rows = ["| model | " + " | ".join(f"{titles[kind]} (mean ± std)" for kind in found) + " |",
            "|---|" + "---|" * len(found)]
    for name in models:
        cells = [(f"{v[0]:.2f} ± {v[1]:.2f}" if v[1] is not None else f"{v[0]:.2f}") if v else "-"
                 for v in (found[kind].get(name) for kind in found)]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def write_report(out, args, stages, models, methods, kinds):
    tables = {kind: open(f"{out}/{kind}_table.md").read() for kind in ("dense", *kinds)}
    finetune = (f"## Full fine-tuning ({args.finetune_iters} iterations)\n\n{tables['finetune']}" if "finetune" in kinds
                else "## Full fine-tuning\n\nNot run (`--finetune-seeds K` adds it; `--study` runs it with 5 seeds).\n")
    with open(os.path.join(seed_dir(f"{out}/dense_random_init", 0), RESULTS_FILE)) as f:
        blind = 100 * json.load(f)["results"]["dense"]["positives"]
    lines = []
    for i, stage in enumerate(stages.done, 1):
        earlier = stage.get("earlier_seconds")
        took = (f"{stage['seconds']:.0f} s" if stage["log"] is not None else "skipped: already done" + (
            f", {earlier:.0f} s when it ran" if earlier is not None else ""))
        command = " ".join(os.path.relpath(c, ROOT) if c.startswith(ROOT) else c for c in stage["command"])
        lines.append(f"{i}. {stage['title']} ({took})\n   `{command}`")
    ran = "\n".join(lines)
    report = f"""# Demo report

ResNet-18 pretrained on CPU for {args.pretrain_iters} iterations per method (`configs/pretrain/demo_r18_cpu.yaml`,
seed 0), then Faster R-CNN R18-FPN on the held-out tree tiles (bbox AP; the VOC area metric) for each of:
{', '.join(models)}; probe seeds 0..{args.probe_seeds - 1}; full fine-tuning: {args.finetune_seeds} seed(s).
Comparisons are paired by seed (model - baseline) with a 95% Student-t interval; "better" only where it
excludes zero; with one seed no spread and no verdict is given.

## Dense linear probe (frozen backbone, C4 cells inside a tree box or not; seeds 0..{args.dense_seeds - 1})

Cell-level average precision (x 100) of a logistic regression on the frozen, BN-re-estimated C4 features; seed
k fits on the k-th seeded half of the training tiles, the same half for every backbone. The share of test
cells inside a box, {blind:.1f}%, is the AP of a blind guess.

{tables['dense']}
## Frozen-backbone probe ({args.probe_iters} iterations; BN re-estimated on the training tiles, backbone frozen)

{tables['probe']}
{finetune}
## The measurements side by side

{spread_rows(out, models, kinds)}

The dense probe's seeds vary only the half of the training tiles it fits on; the detection runs' seeds vary the
data order and the heads' initialisation (and, at random init, the backbone's).

## Matching accuracy at C5 (7 x 7, 224 px views), 64 view pairs of the photos

{matching_rows(out, ['random', *methods])}

Exact: the selected key cell is the true partner; within one: at most one cell away (for threshold, every
positive pair counts). All matchers see the same features of the same pairs.

## Pictures

- `pretraining.png`: the pretraining losses of both methods.
- `matches.png`: view pairs, the positives of argmax, hough and hough_transform drawn on the same pairs.

## What ran

{ran}
"""
    with open(f"{out}/report.md", "w") as f:
        f.write(report)
    return f"{out}/report.md"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--force", action="store_true", help="redo every stage")
    parser.add_argument("--pretrain-iters", type=int, default=120)
    parser.add_argument("--finetune-iters", type=int, default=80)
    parser.add_argument("--probe-iters", type=int, default=80)
    parser.add_argument("--finetune-seeds", type=int, default=0,
                        help="full fine-tuning: seeds 0..K-1 per model (0: none, to stay within 20 minutes)")
    parser.add_argument("--probe-seeds", type=int, default=3, help="probe: seeds 0..K-1 per model")
    parser.add_argument("--dense-seeds", type=int, default=5, help="dense linear probe: seeds 0..K-1 per model")
    parser.add_argument("--out", default=None, help="default: output/demo (output/study with --study)")
    parser.add_argument("--study", action="store_true",
                        help="also hough_transform (extension), the geometric oracle, PixPro-style and MoCo-v2, 5 seeds, "
                        "into output/study")
    args = parser.parse_args(argv)
    methods = STUDY if args.study else METHODS
    if args.study:
        args.finetune_seeds = args.probe_seeds = 5
    out = args.out or os.path.join("output", "study" if args.study else "demo")
    models = ["random_init", *methods]
    kinds = ("probe", "finetune") if args.finetune_seeds else ("probe",)
    runs = [(kind, name) for kind in kinds for name in models]
    plan = [10, 40] + [args.pretrain_iters * 0.8 + 10, 20, 40] * len(methods) + [15] + [30] * len(models) + [5]
    seeds = {"probe": args.probe_seeds, "finetune": args.finetune_seeds}
    plan += [seeds[kind] * (args.probe_iters * 1.2 + 30 if kind == "probe" else args.finetune_iters * 1.3 + 40)
             for kind, _ in runs] + [5] * len(kinds)
    stages = Stages(plan, os.path.join(out, "logs"), ROOT)
    stages.run("fetch real images and the tree detection set", tool("fetch_data.py"))
    stages.run("matching accuracy at random initialisation", tool(
        "eval_matching.py", "--images", "datasets/photos", "--pairs", 64, "--depth", 18, "--out",
        f"{out}/matching_random.json"), f"{out}/matching_random.json", args.force)
    for method, opts in methods.items():
        run_dir = f"{out}/pretrain_{method}"
        stages.run(f"pretrain {method} (ResNet-18, {args.pretrain_iters} iterations)", tool(
            "pretrain_net.py", "--config-file", "configs/pretrain/demo_r18_cpu.yaml", "--resume", *opts,
            "SOLVER.MAX_ITER", args.pretrain_iters, "OUTPUT_DIR", run_dir), f"{run_dir}/backbone.pth", args.force,
            progress=lambda d=run_dir: last_iteration(f"{d}/metrics.jsonl"), total=args.pretrain_iters, clear=[run_dir])
        stages.run(f"convert {method} to Detectron2 and verify", tool(
            "convert.py", f"{run_dir}/backbone.pth", f"{out}/{method}_r18.pkl", "--verify"),
            f"{out}/{method}_r18.pkl", args.force)
        stages.run(f"matching accuracy with the {method} backbone", tool(
            "eval_matching.py", "--images", "datasets/photos", "--pairs", 64, "--weights", f"{run_dir}/backbone.pth",
            "--out", f"{out}/matching_{method}.json"), f"{out}/matching_{method}.json", args.force)
    stages.run("correspondence picture (argmax, hough, hough_transform; HoughCL backbone)", tool(
        "visualize_matches.py", "--images", "datasets/photos", "--weights", f"{out}/pretrain_houghcl/backbone.pth",
        "--out", f"{out}/matches.png", "--seed", 3), f"{out}/matches.png", args.force)
    for name in models:
        weights = [] if name == "random_init" else ["--weights", f"{out}/pretrain_{name}/backbone.pth"]
        stages.run(f"dense linear probe of {name} on the trees ({args.dense_seeds} seeds)", tool(
            "dense_probe.py", "datasets/trees", *weights, "--seeds", args.dense_seeds, "--out", f"{out}/dense_{name}"),
            os.path.join(seed_dir(f"{out}/dense_{name}", args.dense_seeds - 1), RESULTS_FILE), args.force,
            clear=[f"{out}/dense_{name}"])
    stages.run("collect the dense probe results", tool(
        "collect_results.py", *[f"{out}/dense_{n}" for n in models], "--names", *models,
        "--baseline", "random_init", "--baseline", "densecl", "--out", f"{out}/dense_table"))
    for kind, name in runs:
        run_dir, iters = f"{out}/{kind}_{name}", args.probe_iters if kind == "probe" else args.finetune_iters
        weights = "" if name == "random_init" else f"{out}/{name}_r18.pkl"
        stages.run(f"{kind} Faster R-CNN R18-FPN on the trees from {name} ({iters} iterations, {seeds[kind]} seeds)",
                   tool("train_net.py", "--config-file", DETECTION[kind], *TREES, "--seeds", seeds[kind], "--resume",
                        "MODEL.WEIGHTS", weights, "SOLVER.MAX_ITER", iters, "SOLVER.STEPS", f"({int(iters * 0.8)},)",
                        "OUTPUT_DIR", run_dir),
                   os.path.join(seed_dir(run_dir, seeds[kind] - 1), RESULTS_FILE), args.force,
                   progress=lambda d=run_dir, n=seeds[kind]: sum(
                       last_iteration(os.path.join(seed_dir(d, k), "metrics.json"), 1) for k in range(n)),
                   total=iters * seeds[kind], clear=[run_dir])
    for kind in kinds:
        stages.run(f"collect the {kind} results", tool(
            "collect_results.py", *[f"{out}/{kind}_{n}" for n in models], "--names", *models,
            "--baseline", "random_init", "--baseline", "densecl", "--out", f"{out}/{kind}_table"))
    plot_metrics({m: f"{out}/pretrain_{m}" for m in methods}, os.path.join(out, "pretraining.png"))
    report = write_report(out, args, stages, models, methods, kinds)
    with open(report) as f:
        print("\n" + f.read().split("## Pictures")[0])
    print(f"Report: {report}; logs: {out}/logs/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
