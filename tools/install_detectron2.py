#!/usr/bin/env python
"""Install Detectron2 v0.6 into the running Python, without a compiler toolchain for its CUDA/C++ ops.

Detectron2 is not on PyPI under its own name. Where upstream is reachable, install it as its docs say; this
script keeps any detectron2 that already imports. Otherwise it installs PyPI's ``pb1-detectron2`` 0.6 sdist
(upstream v0.6 byte for byte except the package name, but missing the C++ sources of ``detectron2/_C``):

1. download the sdist from the package index and check its sha256;
2. build no extension and give ``detectron2._C`` a pure-Python stand-in that raises a clear error when one of
   the few ops needing it (rotated boxes, deformable conv, the fast COCO evaluator) is called; ROIAlign and
   NMS come from torchvision;
3. adapt v0.6 to today's setuptools (no ``pkg_resources``), NumPy (no ``np.int``/``np.float``/``np.bool``/
   ``np.str``) and Pillow (no ``Image.LINEAR``); default COCOEvaluator to pycocotools;
4. keep the sdist's top-level ``tools`` package out, so that it cannot shadow a project's own ``tools/``;
5. ``pip install --no-build-isolation`` the patched tree.

Every patch asserts the text it replaces (transfer/detectron2_sdist.py), so a different tarball fails loudly
instead of half-working. Usage: ``python tools/install_detectron2.py [--sdist FILE] [--force]``.
"""
import _env  # noqa: F401  isort: skip  (first: outside the environment, one line on how to enter it)
import argparse
import sys

from transfer.detectron2_sdist import CACHE, SDIST, InstallError, existing_detectron2, fetch_sdist, install, step


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sdist", help=f"a local copy of {SDIST} (otherwise downloaded and cached in {CACHE})")
    parser.add_argument("--force", action="store_true", help="reinstall even if detectron2 already imports")
    args = parser.parse_args(argv)
    found = None if args.force else existing_detectron2()
    if found:
        step(f"detectron2 already works here, kept: {found}")
        return 0
    try:
        install(fetch_sdist(args.sdist))
    except InstallError as e:
        print(f"[install_detectron2] error: {e}", file=sys.stderr)
        return 1
    found = existing_detectron2()
    if not found:
        print("[install_detectron2] error: detectron2 was installed but does not import", file=sys.stderr)
        return 1
    step(f"installed: {found}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
