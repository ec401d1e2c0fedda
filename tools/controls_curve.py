#!/usr/bin/env python
"""The controls of positive selection over pretraining length: oracle - argmax, oracle - random, argmax - random.

    tools/demo.py --methods densecl geometric_oracle random_positives --pretrain-seeds 10 --probe-seeds 0 \\
        --numerics fast --pretrain-iters 60 --out output/controls_i60            # one regime (and 240, 960, ...)
    tools/controls_curve.py output/controls_i60 output/controls_i240 --iterations 60 240 --out output/controls

Reads each regime's readouts (correspondence at C4 and C5, dense retrieval, the dense probe), pairs them by
pretraining seed, applies the rule of transfer/readout/controls.py and writes OUT.md (the table) and one figure per
readout, OUT_<readout>.png.
"""
import _env  # noqa: F401  isort: skip  (first: outside the environment, one line on how to enter it)
import argparse
import os
import sys

from transfer.readout.controls import write_curve
from transfer.results import ResultsError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("regimes", nargs="+", metavar="OUT", help="tools/demo.py --methods output folders")
    parser.add_argument("--iterations", nargs="+", type=int, required=True, help="each regime's pretraining length")
    parser.add_argument("--names", nargs="+", help="one name per regime (default: the folder names)")
    parser.add_argument("--out", required=True, help="writes OUT.md and OUT_<readout>.png")
    args = parser.parse_args(argv)
    names = args.names or [os.path.basename(os.path.normpath(d)) for d in args.regimes]
    if not len(names) == len(args.iterations) == len(args.regimes):
        parser.error("--iterations (and --names) need one value per regime")
    missing = [d for d in args.regimes if not os.path.isdir(d)]
    if missing:
        print(f"error: {missing[0]}: no such folder (run tools/demo.py --methods ... --out there first)",
              file=sys.stderr)
        return 1
    try:
        written = write_curve(args.regimes, names, args.iterations, args.out)
    except (ResultsError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    with open(written[0]) as f:
        print(f.read())
    print("wrote " + ", ".join(written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
