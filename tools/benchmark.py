#!/usr/bin/env python
"""Speed, measured as ratios within one run: the pretraining step, the matchers, the data pipeline.

    tools/benchmark.py step --depth 18 --size 224 --batch 8 --json out.json
    tools/benchmark.py match --json match.json
    tools/benchmark.py data --images datasets/photos --json data.json
    tools/benchmark.py numerics --depth 18 --size 224 --batch 8 --json numerics.json   (portable / fast step)
    tools/benchmark.py numerics --candidates mkl_avx2_strict channels_last   (cheaper portable modes, measured)
    tools/benchmark.py retrieval --bank-patches 1000000 --json retrieval.json   (dense retrieval patches/s)
    tools/benchmark.py checks --entries 100000 --json checks.json   (fine-tuning's image checks on a large set)

Variants are interleaved (warm-up, then repetitions in turn) so that drifts of the machine hit all of them;
each reports the median and the spread (min, max); ratios are medians of same-round ratios. Targets (goals,
not tests): hough/argmax (HoughCL/DenseCL) step <= 1.02 at R18 and R50 (224 px, batch 8; 1.01 on GPU),
hough/floor <= 1.10, Hough at grid 28 within 2x argmax, data >= 1.0x the plain pipeline. ``numerics`` times the
HoughCL step in a fast and a portable process, in turn (pretrain/bench/numerics.py).
"""
import _env  # noqa: F401  isort: skip  (first: outside the environment, one line on how to enter it)
import argparse
import os
import platform
import sys

import torch

from pretrain.bench.data import bench_data
from pretrain.bench.numerics import CANDIDATES, bench_numerics
from pretrain.bench.step import STEP_VARIANTS, bench_match, bench_step
from pretrain.runtime.files import atomic_write_json
from transfer.bench.checks import bench_checks
from transfer.bench.report import print_table
from transfer.bench.retrieval import bench_retrieval


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("part", choices=("step", "match", "data", "numerics", "retrieval", "checks"))
    parser.add_argument("--depth", type=int, default=18)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (GPU)")
    parser.add_argument("--no-channels-last", action="store_true", help="GPU: keep NCHW (channels-last is default)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the encoders (first_call_s: compile)")
    parser.add_argument("--max-batch", action="store_true", help="GPU: also find the largest batch that fits")
    parser.add_argument("--max-batch-limit", type=int, default=1024)
    parser.add_argument("--variant", default="hough", choices=list(STEP_VARIANTS), help="numerics: the step timed")
    parser.add_argument("--candidates", nargs="+", default=[], choices=list(CANDIDATES),
                        help="numerics: also time these changes of portable, and whether they keep its bits")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--grids", type=int, nargs="+", default=[7, 14, 28])
    parser.add_argument("--match-batch", type=int, default=32)
    parser.add_argument("--channels", type=int, default=2048, help="feature width (C5 of ResNet-50: 2048)")
    parser.add_argument("--match-repeats", type=int, default=10)
    parser.add_argument("--images", default="datasets/photos")
    parser.add_argument("--data-batch", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--data-repeats", type=int, default=3)
    parser.add_argument("--data-epochs", type=int, default=3, help="data: epochs per measurement, from one loader")
    parser.add_argument("--decode", type=int, default=0, metavar="N", help="data: also time JPEG decoding of N files")
    parser.add_argument("--bank-patches", type=int, default=1_000_000, help="retrieval: patches in the bank")
    parser.add_argument("--queries", type=int, default=1000, help="retrieval: query patches per search")
    parser.add_argument("--neighbours", type=int, default=30, help="retrieval: k")
    parser.add_argument("--entries", type=int, default=100_000, help="checks: images in the set")
    parser.add_argument("--decode-sample", type=int, default=1000, help="checks: files decoded for the comparison")
    parser.add_argument("--scratch", default=None, help="checks: where the files are written (default: the temp dir)")
    parser.add_argument("--json", help="write the result here")
    args = parser.parse_args(argv)
    parts = {"step": bench_step, "match": bench_match, "data": bench_data, "numerics": bench_numerics,
             "retrieval": bench_retrieval, "checks": bench_checks}
    try:
        result = parts[args.part](args)
    except (ValueError, OSError) as e:  # bad input: one line (a data folder too small, a missing file)
        print(f"error: {e}", file=sys.stderr)
        return 1
    result["machine"] = {"platform": platform.platform(), "processor": platform.processor(),
                         "cpu_count": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                         "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    print_table(result)
    if args.json:
        atomic_write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
