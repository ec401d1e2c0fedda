#!/usr/bin/env python
"""Release a converted backbone: ``NAME-<sha8>.pkl``, its sidecar, and a model card ``NAME-<sha8>.md``.

    tools/publish.py output/houghcl_r50.pkl --name houghcl_r50_200ep --out releases \\
        --results output/voc/houghcl output/coco/houghcl

The card records the source checkpoint and its sha256, the pretraining recipe (``config.yaml`` beside the
source, or ``--recipe``), the conversion sidecar, the Detectron2 settings to fine-tune with, and the tables of
the fine-tuning runs given with ``--results`` (folders of ``seed_*/final_results.json``).
"""
import _env  # noqa: F401  isort: skip  (first: outside the environment, one line on how to enter it)
import argparse
import sys

from transfer.release import publish
from transfer.results import ResultsError
from transfer.weights import WeightsError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("weights", help="a .pkl written by tools/convert.py (its .pkl.json sidecar beside it)")
    parser.add_argument("--name", required=True, help="release name, e.g. houghcl_r50_200ep")
    parser.add_argument("--out", required=True, help="folder to write the release into")
    parser.add_argument("--recipe", help="the pretraining config.yaml (default: the one beside the source)")
    parser.add_argument("--results", nargs="+", default=[], metavar="RUN_DIR",
                        help="runs of these weights to tabulate: fine-tuning (from the .pkl), the dense probe or "
                             "retrieval (from the checkpoint it was converted from)")
    args = parser.parse_args(argv)
    try:
        written = publish(args.weights, args.name, args.out, args.recipe, args.results)
    except (WeightsError, ResultsError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print("wrote " + ", ".join(written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
