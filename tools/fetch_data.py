#!/usr/bin/env python
"""Fetch the real images the demo and the studies use, from Python package registries (no web downloads).

    tools/fetch_data.py [--root datasets]

- natural photos for pretraining: the 20 ImageNet photos shipped in ``foolbox`` 3.3.4 (MIT) and the
  unannotated photos of ``deepforest`` 2.1.0;
- a real detection set: ``deepforest`` 2.1.0's aerial RGB images with 951 human-labelled tree boxes (MIT;
  imagery from NEON), cut into tiles in a PASCAL VOC layout (``ROOT/trees``), one class ``tree``. The split is
  by image region: in every image the right-most quarter of tile columns is test, the rest train, and tiles
  never overlap, so no test pixel lies in any training tile.

Wheels are fetched with ``pip download --no-deps`` (never installed), checked against pinned sha256 sums and
unpacked. A second run finds everything in place and does nothing. ``ROOT/pretrain_images.txt`` lists the
photos and the TRAINING tiles only (test tiles never reach pretraining). Licenses: ``ROOT/SOURCES.json``.
"""
import argparse
import sys

from transfer.fetch import FetchError, fetch


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
