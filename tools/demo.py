#!/usr/bin/env python
"""`make demo`: the whole toolkit on real images on a CPU, within 15 minutes; ends with output/demo/report.md.

fetch real data -> pretrain HoughCL (`hough`, reference options: RHM at C5) and DenseCL, ResNet-18, 3 pretraining
seeds each -> matching accuracy of every matcher at C5 with HoughCL's backbone and a correspondence picture -> dense
retrieval (no training) of random init (drawn with the same seeds), HoughCL and DenseCL on the tree tiles, paired by
pretraining seed -> convert with --verify -> the frozen-backbone detection probe (Faster R-CNN R18-FPN) -> tables ->
report.md (``--dense-probe``: the dense linear probe too, as in ``--study`` and ``--methods``). One line
per stage (elapsed, ETA), full logs under OUT/logs/. Every seed is fixed and every stage runs in portable numerics
(``--numerics fast`` to leave them): a rerun, here or on another x86-64 CPU with AVX2, prints the same numbers, and
skips the stages whose output exists and whose inputs (command, files, library code, package versions, the numerics
mode) did not change. The stages themselves are described in transfer/pipeline/plan.py.
"""
import _env  # noqa: F401  isort: skip  (first: outside the environment, one line on how to enter it)
import argparse
import os
import re
import sys

from pretrain.config import ConfigError
from pretrain.runtime import numerics
from pretrain.runtime.lock import LockError
from transfer.pipeline.demo import run
from transfer.pipeline.plan import DEMO_ITERATIONS, STUDY_METHODS, plan_from_args

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--force", action="store_true", help="redo every stage")
    parser.add_argument("--pretrain-seeds", type=int, default=None, help="pretraining seeds 0..K-1 per method "
                        "(default: 3; 10 with --study)")
    parser.add_argument("--pretrain-iters", type=int, default=DEMO_ITERATIONS)
    parser.add_argument("--pretrain-opts", nargs="+", default=[], metavar="KEY VALUE",
                        help="overrides of configs/pretrain/demo_r18_cpu.yaml for every method, e.g. "
                             "SOLVER.BASE_LR 0.25 (a recipe study: give it its own --out)")
    parser.add_argument("--methods", nargs="+", default=None, choices=list(STUDY_METHODS), metavar="METHOD",
                        help=f"the pretrained methods (default: houghcl densecl; all with --study); densecl, the "
                             f"baseline of the tables, is always one: {', '.join(STUDY_METHODS)}")
    parser.add_argument("--dense-probe", action="store_true", help="also the dense linear probe of every backbone "
                        "(always with --study or --methods; the demo reads its backbones with dense retrieval, the "
                        "cheaper readout and the narrower one against random init, docs/results.md section 2)")
    parser.add_argument("--dense-halves", type=int, default=None,
                        help="dense probe: training halves averaged (default: 3; 5 with --study)")
    parser.add_argument("--probe-seeds", type=int, default=1, help="detection probe: seeds 0..K-1 per model")
    parser.add_argument("--finetune-seeds", type=int, default=0, help="full fine-tuning: seeds 0..K-1 per model")
    parser.add_argument("--detection-iters", type=int, default=None,
                        help="iterations of each detection run (default: 40; 80 with --study)")
    parser.add_argument("--retrieval-size", type=int, default=None, help="dense retrieval: view size, a multiple "
                        "of 16 (default 112, a 7 x 7 C4 grid, a quarter of the reference's 224 px cost; with "
                        "--segmentation 128, the nuclei tiles' own size; 0: none)")
    parser.add_argument("--out", default=None, help="default: output/demo (output/study with --study)")
    parser.add_argument("--segmentation", action="store_true", help="HoughCL and DenseCL backbones (3 pretraining "
                        "seeds) and random init on the nuclei tiles: FCN-D8 fine-tuning and the frozen linear "
                        "probe, paired by pretraining seed, into output/segmentation")
    parser.add_argument("--segmentation-iters", type=int, default=100)
    parser.add_argument("--study", action="store_true", help="also hough_transform (extension), the geometric "
                        "oracle, PixPro-style and MoCo-v2, 10 pretraining seeds, and HoughCL's and DenseCL's runs "
                        "read otherwise (momentum encoder, mean of the last checkpoints), into output/study")
    numerics.add_argument(parser, default="portable")
    args = parser.parse_args(argv)
    if args.methods is not None and "densecl" not in args.methods:
        parser.error("--methods: densecl is the tables' baseline and must be one of them")
    if len(args.pretrain_opts) % 2:
        parser.error("--pretrain-opts: KEY VALUE pairs, got an odd number of words")
    plan = plan_from_args(args)
    try:
        plan.pretrain_cfg  # a bad override is one line now, not a failed stage later
    except ConfigError as e:
        print(f"error: --pretrain-opts {' '.join(args.pretrain_opts)}: {e}", file=sys.stderr)
        return 1
    if not numerics.switch(args.numerics):  # recorded in the report; every stage runs in this mode
        return 2
    try:
        report = run(plan, ROOT, args.force)
    except LockError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    with open(report) as f:
        print("\n" + re.split(r"## (?:Pictures|Where these numbers come from)", f.read())[0])
    print(f"Report: {report}; logs: {plan.out}/logs/")
    return 0


if __name__ == "__main__":
    numerics.reexec_if_needed(default="portable")  # the report records the mode its stages ran in
    sys.exit(main())
