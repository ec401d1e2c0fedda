#!/usr/bin/env python
"""The positive pairs every appearance-based matcher chooses, on the view pairs where they disagree most.

    tools/visualize_matches.py --images datasets/photos --weights backbone.pth --out output/matches.png

Of --pairs seeded view pairs (the pretraining augmentation), the --show pairs where the matchers pick different
key cells for the most query cells. Per pair, one row per registered matcher that chooses by appearance (argmax:
DenseCL; hough: HoughCL with the reference options; hough_transform: this toolkit's extension), drawn on the same
two views, each query cell with a true partner joined to its chosen key cell: green, the true partner; orange,
one cell away; red, wrong. The caption gives every matcher's accuracy over ALL pairs evaluated, not only the
drawn ones.
"""
import _env  # noqa: F401  isort: skip  (first: outside the environment, one line on how to enter it)
import argparse
import sys

from pretrain.data.images import list_images, readable_images
from pretrain.evaluation.picture import disagreement_picture
from pretrain.runtime import numerics
from pretrain.runtime.files import atomic_write


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", required=True)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--depth", type=int, default=None, help="default: that of --weights; 18 at random init")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--pairs", type=int, default=32, help="view pairs evaluated")
    parser.add_argument("--show", type=int, default=2, help="pairs drawn: those where the matchers disagree most")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="PNG to write")
    numerics.add_argument(parser)
    args = parser.parse_args(argv)
    if not numerics.switch(args.numerics):
        return 2
    paths = readable_images(list_images(args.images))
    if not paths:
        print(f"error: {args.images}: no readable image", file=sys.stderr)
        return 1
    picture, caption = disagreement_picture(paths, args.depth, args.weights, args.size, args.pairs, args.show,
                                            args.seed)
    atomic_write(args.out, lambda f: picture.save(f, format="PNG"))
    print(caption)
    print(f"wrote {args.out} ({picture.width}x{picture.height})")
    return 0


if __name__ == "__main__":
    numerics.reexec_if_needed()  # --numerics portable: the variables libraries read at load time
    sys.exit(main())
