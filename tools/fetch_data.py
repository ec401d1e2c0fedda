#!/usr/bin/env python
"""Fetch the real images the demo and the studies use, from Python package registries (no web downloads).

    tools/fetch_data.py [--root datasets] [--large-corpus]

Natural photos for pretraining (``foolbox``'s 20 ImageNet photos, ``deepforest``'s unannotated photos) and a real
detection set (``deepforest``'s aerial images with 951 human-labelled tree boxes, tiled into ``ROOT/trees``, test
tiles a separate region of every image). What is fetched, pinned and written: ``transfer/data/fetch.py``. A second run
finds everything in place and does nothing. ``--large-corpus`` adds about 1,100 real photos and street-video frames
from Debian and PyPI packages for pretraining (``ROOT/pretrain_images_large.txt``; ``transfer/data/corpus.py``).
"""
import _env  # noqa: F401  isort: skip  (first: outside the environment, one line on how to enter it)
import argparse
import sys

from transfer.data.corpus import fetch_corpus
from transfer.data.fetch import FetchError, fetch


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default="datasets", help="where the data lands (default: datasets/)")
    parser.add_argument("--large-corpus", action="store_true",
                        help="also the larger pretraining corpus (apt-get and pip downloads, about 150 MB)")
    args = parser.parse_args(argv)
    try:
        fetch(args.root)
        if args.large_corpus:
            fetch_corpus(args.root)
    except FetchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
