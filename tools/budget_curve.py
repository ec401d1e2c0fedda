#!/usr/bin/env python
"""What pretraining time buys: the dense linear probe of every checkpoint of pretraining runs, against random init.

    tools/pretrain_net.py --config-file configs/pretrain/demo_r18_cpu.yaml MODEL.MATCHER hough \
        SOLVER.MAX_ITER 600 SOLVER.CHECKPOINT_PERIOD 120 OUTPUT_DIR output/budget/houghcl
    tools/budget_curve.py output/budget/houghcl output/budget/densecl --out output/budget/curve

Each checkpoint ``model_*.pth`` is probed like tools/dense_probe.py (seeds = training halves), and paired by seed
with the random init. Minutes are the iterations times the run's median seconds per iteration (its
metrics.jsonl), or ``--seconds-per-iteration``. Writes OUT.json, OUT.md and OUT.png.
"""
import _env  # noqa: F401  isort: skip  (first: outside the environment, one line on how to enter it)
import argparse
import os
import sys

from pretrain.backbone import STAGES, BackboneError
from pretrain.runtime.files import atomic_write_json, atomic_write_text
from transfer.data.voc_layout import scan_split
from transfer.readout.budget import curve_markdown, plot, seconds_per_iteration
from transfer.readout.dense_probe import budget_curve, load_tiles
from transfer.results import seed_count


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="pretraining runs with model_*.pth")
    parser.add_argument("--names", nargs="+", help="one name per RUN_DIR (default: the folder names)")
    parser.add_argument("--voc", default="datasets/trees", help="VOC-layout detection set (default: the trees)")
    parser.add_argument("--layer", default="layer3", choices=STAGES)
    parser.add_argument("--seeds", type=seed_count, default=5, help="training halves 0..K-1 (default: 5)")
    parser.add_argument("--seconds-per-iteration", type=float, default=None,
                        help="for the minutes (default: each run's median from its metrics.jsonl)")
    parser.add_argument("--out", required=True, help="writes OUT.json, OUT.md, OUT.png")
    args = parser.parse_args(argv)
    names = args.names or [os.path.basename(os.path.normpath(d)) for d in args.run_dirs]
    if len(names) != len(args.run_dirs) or "random_init" in names:
        parser.error("--names needs one name per RUN_DIR, none of them random_init")
    try:
        runs = dict(zip(names, args.run_dirs))
        minutes = {n: (args.seconds_per_iteration or seconds_per_iteration(d)) / 60 for n, d in runs.items()}
        classes = scan_split(args.voc, "train")
        train, test = (load_tiles(args.voc, split, classes) for split in ("train", "test"))
        rows = budget_curve(train, test, runs, range(args.seeds), args.layer)
    except (BackboneError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    table = curve_markdown(rows, minutes)
    print(table, end="")
    atomic_write_text(args.out + ".md", table)
    atomic_write_json(args.out + ".json", {"minutes_per_iteration": minutes, "rows": rows}, indent=1)
    plot(rows, minutes, args.out + ".png")
    print(f"wrote {args.out}.md, {args.out}.json and {args.out}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
