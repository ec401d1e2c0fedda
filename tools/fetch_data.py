#!/usr/bin/env python
"""Fetch the real images the demo and the studies use, from Python package registries (no web downloads).

    tools/fetch_data.py [--root datasets]

Natural photos for pretraining (``foolbox``'s 20 ImageNet photos, ``deepforest``'s unannotated photos) and a real
detection set (``deepforest``'s aerial images with 951 human-labelled tree boxes, tiled into ``ROOT/trees``, test
tiles a separate region of every image). What is fetched, pinned and written: ``transfer/data/fetch.py``. A second run
finds everything in place and does nothing.
"""
import _env  # noqa: F401  isort: skip  (first: outside the environment, one line on how to enter it)
import argparse
import sys

from transfer.data.fetch import FetchError, fetch


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default="datasets", help="where the data lands (default: datasets/)")
    args = parser.parse_args(argv)
    try:
        fetch(args.root)
    except FetchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
