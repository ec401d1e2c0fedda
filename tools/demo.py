#!/usr/bin/env python
"""`make demo`: the whole toolkit on real images on a CPU, in about a quarter of an hour.

fetch real data -> pretrain HoughCL and DenseCL (ResNet-18) -> convert with --verify -> matching accuracy and a
correspondence picture -> fine-tune Faster R-CNN R18-FPN on the tree tiles from random init, HoughCL and DenseCL
-> evaluate on the held-out test tiles -> print the tables. Everything lands in output/demo/. A rerun skips the
steps whose results exist (``--force`` redoes them).
"""
import argparse
import json
import os
import subprocess
import sys
import time

from pretrain.engine import plot_metrics
from transfer.results import RESULTS_FILE, seed_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join("output", "demo")
PYTHON = sys.executable
TREES = ["--voc", "trees_train", "datasets/trees", "train", "--voc", "trees_test", "datasets/trees", "test"]
METHODS = {"houghcl": ["MODEL.MATCHER", "hough"], "densecl": ["MODEL.MATCHER", "argmax"]}


class Step:
    def __init__(self, total):
        self.number, self.total, self.started = 0, total, time.time()

    def run(self, title, command, done_when=None, force=False):
        self.number += 1
        elapsed = time.strftime("%M:%S", time.gmtime(time.time() - self.started))
        if done_when and os.path.exists(done_when) and not force:
            print(f"\n[{self.number}/{self.total} {elapsed}] {title}: already done ({done_when})", flush=True)
            return
        print(f"\n[{self.number}/{self.total} {elapsed}] {title}\n  $ {' '.join(command)}", flush=True)
        result = subprocess.run(command, cwd=ROOT)
        if result.returncode != 0:
            sys.exit(f"make demo: step {self.number} ({title}) failed with exit status {result.returncode}")


def tool(name, *args):
    return [PYTHON, os.path.join("tools", name), *map(str, args)]


def matching_table(out, methods):
    lines = ["| backbone | argmax | Hough translation | Hough similarity | oracle |", "|---|---|---|---|---|"]
    for name in ("random", *methods):
        path = os.path.join(out, f"matching_{name}.json")
        if os.path.exists(path):
            with open(path) as f:
                r = json.load(f)
            lines.append(f"| {name} | {r['argmax']:.3f} | {r['hough_translation']:.3f} | "
                         f"{r['hough_similarity']:.3f} | {r['geometric']:.3f} |")
    return "\n".join(lines)


def matching_over_training(step, out, methods, iterations, force):
    """Matching accuracy of argmax and Hough on the backbone at several points of each pretraining run."""
    rows = ["| pretraining | iteration | layer | argmax | Hough translation | Hough similarity |",
            "|---|---|---|---|---|---|"]
    for method in methods:
        for it in iterations:
            weights = f"{out}/pretrain_{method}/model_{it:07d}.pth" if it else None
            for layer in ("layer3", "layer4"):
                path = f"{out}/matching_{method}_{it}_{layer}.json"
                step.run(f"matching accuracy: {method} at iteration {it}, {layer}", tool(
                    "eval_matching.py", "--images", "datasets/photos", "--pairs", 96, "--layer", layer, "--out",
                    path, *(["--weights", weights] if weights else []), "MODEL.DEPTH", 18), path, force)
                with open(path) as f:
                    r = json.load(f)
                rows.append(f"| {method} | {it} | {layer} | {r['argmax']:.3f} | {r['hough_translation']:.3f} | "
                            f"{r['hough_similarity']:.3f} |")
    return "\n".join(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--force", action="store_true", help="redo every step")
    parser.add_argument("--pretrain-iters", type=int, default=120)
    parser.add_argument("--finetune-iters", type=int, default=150)
    parser.add_argument("--study", action="store_true",
                        help="docs/results.md: add MoCo-v2, 3 fine-tuning seeds per model, and matching accuracy "
                             "over the course of pretraining (output/study/, about an hour)")
    args = parser.parse_args(argv)
    out = os.path.join("output", "study") if args.study else OUT
    methods = dict(METHODS, mocov2=["MODEL.LOSS_LAMBDA", 0.0]) if args.study else METHODS
    seeds = 3 if args.study else 1
    os.makedirs(out, exist_ok=True)
    checkpoints = [0] + list(range(40, args.pretrain_iters + 1, 40))
    studied = [m for m in methods if m != "mocov2"]
    extra = 2 * len(studied) * len(checkpoints) if args.study else 0
    step = Step(total=5 + 4 * len(methods) + extra)
    step.run("fetch real images and the tree detection set", tool("fetch_data.py"))
    step.run("matching accuracy at random initialisation", tool(
        "eval_matching.py", "--images", "datasets/photos", "--pairs", 64, "--layer", "layer3", "--out",
        f"{out}/matching_random.json", "MODEL.DEPTH", 18), f"{out}/matching_random.json", args.force)
    for method, opts in methods.items():
        run_dir = f"{out}/pretrain_{method}"
        step.run(f"pretrain {method} (ResNet-18, {args.pretrain_iters} iterations)", tool(
            "pretrain_net.py", "--config-file", "configs/pretrain/demo_r18_cpu.yaml", "--resume", *opts,
            "SOLVER.MAX_ITER", args.pretrain_iters, "OUTPUT_DIR", run_dir), f"{run_dir}/backbone.pth", args.force)
        step.run(f"convert {method} to Detectron2 and verify", tool(
            "convert.py", f"{run_dir}/backbone.pth", f"{out}/{method}_r18.pkl", "--verify"),
            f"{out}/{method}_r18.pkl", args.force)
        step.run(f"matching accuracy with the {method} backbone", tool(
            "eval_matching.py", "--images", "datasets/photos", "--pairs", 64, "--layer", "layer3", "--weights",
            f"{run_dir}/backbone.pth", "--out", f"{out}/matching_{method}.json", "MODEL.DEPTH", 18),
            f"{out}/matching_{method}.json", args.force)
    step.run("correspondence picture (argmax vs Hough, HoughCL backbone)", tool(
        "visualize_matches.py", "--images", "datasets/photos", "--weights", f"{out}/pretrain_houghcl/backbone.pth",
        "--out", f"{out}/matches.png", "--seed", 3), f"{out}/matches.png", args.force)
    for name, weights in [("random_init", "")] + [(m, f"{out}/{m}_r18.pkl") for m in methods]:
        run_dir = f"{out}/trees_{name}"
        done = os.path.join(seed_dir(run_dir, seeds - 1), RESULTS_FILE)
        step.run(f"fine-tune Faster R-CNN R18-FPN on the trees from {name} ({args.finetune_iters} iterations, "
                 f"{seeds} seed(s))",
                 tool("train_net.py", "--config-file", "configs/transfer/tiny/trees_R_18_FPN_cpu.yaml", *TREES,
                      "--seeds", seeds, "MODEL.WEIGHTS", weights, "SOLVER.MAX_ITER", args.finetune_iters,
                      "SOLVER.STEPS", f"({int(args.finetune_iters * 0.8)},)", "OUTPUT_DIR", run_dir), done, args.force)
    step.run("collect the detection results", tool(
        "collect_results.py", *[f"{out}/trees_{n}" for n in ["random_init", *methods]], "--names", "random_init",
        *methods, "--baseline", "random_init", "--baseline", "densecl", "--out", f"{out}/table"))
    print("  wrote", plot_metrics({m: f"{out}/pretrain_{m}" for m in methods}, os.path.join(out, "pretraining.png")))
    print("\nMatching accuracy (64 view pairs of the photos, ResNet-18 layer3, within one cell of the truth):")
    print(matching_table(out, methods))
    if args.study:
        table = matching_over_training(step, out, studied, checkpoints, args.force)
        with open(f"{out}/matching_over_training.md", "w") as f:
            f.write(table + "\n")
        print(f"\nMatching accuracy over the course of pretraining (96 view pairs):\n{table}")
    with open(f"{out}/table.md") as f:
        print(f"\nTree detection on the held-out test tiles "
              f"(bbox AP over {seeds} seed(s), seeds 0..{seeds - 1}):\n{f.read()}")
    print(f"All outputs under {out}/ (tables, metrics, pretraining.png, matches.png). "
          f"Total {time.strftime('%M:%S', time.gmtime(time.time() - step.started))}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
