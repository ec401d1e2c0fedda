#!/usr/bin/env python
"""The correspondence readout of a backbone: argmax on its own features across held-out view pairs, at C4 and C5.

    tools/correspondence.py --images datasets/photos --weights output/demo/pretrain_houghcl_seed0/backbone.pth \
        --seed 0 --out output/correspondence/houghcl
    tools/collect_results.py output/correspondence/densecl output/correspondence/houghcl --baseline densecl

What the dense loss teaches, read directly: the share of query cells whose most similar key cell is their true
partner (exact) or within one cell of it, x 100 (transfer/readout/correspondence.py). Writes
OUT/seed_S/final_results.json (``correspondence/C4_exact``, ``C4_within_one``, ``C5_exact``, ``C5_within_one``),
the layout tools/collect_results.py pairs by seed.
"""
import _env  # noqa: F401  isort: skip  (first: outside the environment, one line on how to enter it)
import argparse
import json
import os
import sys

from pretrain.backbone import BackboneError
from pretrain.runtime import numerics
from transfer.readout.backbone_args import add_backbone_arguments, add_seed_and_out
from transfer.results import seed_dir, write_final_results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", required=True, help="a folder of images (the demo: datasets/photos)")
    parser.add_argument("--pairs", type=int, default=64, help="view pairs (default: 64)")
    parser.add_argument("--size", type=int, default=224, help="views are SIZE x SIZE (default: 224: 14 x 14 C4)")
    add_backbone_arguments(parser, layer=False)
    add_seed_and_out(parser, draws="the view pairs (the same for every backbone of a seed)")
    numerics.add_argument(parser)
    args = parser.parse_args(argv)
    if not numerics.switch(args.numerics):
        return 2
    if args.pairs < 1 or args.size < 32:
        parser.error(f"--pairs {args.pairs} --size {args.size}: at least one pair of views of 32 px or more")
    from transfer.readout.correspondence import correspondence
    try:
        found, counts = correspondence(args.images, args.weights, args.depth, args.pairs, args.seed, args.size,
                                       init_seed=args.seed, encoder=args.encoder)
    except (BackboneError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"seed {args.seed}: " + ", ".join(f"{k} {v:.2f}" for k, v in found.items()))
    evaluation = {"metric": "argmax correspondence on the backbone's features, C4 and C5", "source":
                  os.path.abspath(args.images), "pairs": args.pairs, "size": args.size}
    settings = {k: getattr(args, k) for k in ("images", "pairs", "size", "encoder")}
    path = write_final_results(seed_dir(args.out, args.seed), {"correspondence": found}, args.seed,
                               " + ".join(args.weights or []), json.dumps(settings), probe="correspondence",
                               evaluation=[evaluation], counts=counts)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    numerics.reexec_if_needed()  # --numerics portable: the variables libraries read at load time
    sys.exit(main())
