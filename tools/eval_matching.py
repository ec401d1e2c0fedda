#!/usr/bin/env python
"""Matching accuracy of argmax, Hough (translation, similarity) and the geometric oracle on the same features.

    tools/eval_matching.py --images datasets/photos --pairs 96 --seed 0 --out output/matching.json
    tools/eval_matching.py --images datasets/photos --weights output/pretrain/x/backbone.pth --out m.json

Over K seeded pairs of MoCo-v2 views of real images, for the query cells with a true partner: the fraction whose
selected key cell IS the partner (exact), the fraction within one cell of it, and the sub-cell error (key cells
from the selected cell's centre to the exact partner point), split by orientation and by the crops' scale
ratio in the JSON. Random initialisation when no weights are given. Hough settings come from the pretraining
config (``--config-file``, default: the built-in defaults) and KEY VALUE overrides.
"""
import argparse
import json
import sys

from pretrain.backbone import BackboneError
from pretrain.checkpoint import atomic_write
from pretrain.config import ConfigError, load_config
from pretrain.matching import HoughOptions
from pretrain.matching_eval import COMPARED, matching_study


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", required=True, help="a folder of images or a list file")
    parser.add_argument("--weights", help="backbone.pth or a pretraining checkpoint (default: random init)")
    parser.add_argument("--depth", type=int, default=None,
                        help="ResNet depth (default: that of --weights; ResNet-18 at random init)")
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--layer", default="layer4", choices=("layer3", "layer4"))
    parser.add_argument("--tolerance", type=int, choices=(0, 1), default=None,
                        help="summary line for one tolerance only (0: exact cell, 1: within one cell)")
    parser.add_argument("--config-file", default="", help="pretraining config for MODEL.HOUGH and MODEL.DEPTH")
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("opts", nargs="*", help="KEY VALUE overrides of the config (e.g. MODEL.HOUGH.VOTE softmax)")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config_file, args.opts)
        result = matching_study(args.images, args.weights, args.depth, args.pairs, args.seed, args.size, args.layer,
                                HoughOptions.from_cfg(cfg.MODEL.HOUGH))
    except (ConfigError, BackboneError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.pairs} view pairs of {result['counts']['images']} images, grid {result['counts']['grid']}, "
          f"{result['counts']['query_cells_with_partner']} query cells with a true partner")

    def fmt(v):
        return "-" if v is None else f"{v:.3f}"

    print("| matcher | exact | within one | median error | mean error | within one, same orientation | mirrored |\n"
          "|---|---|---|---|---|---|---|")
    for name in COMPARED:
        exact, near, error = (result[k][name] for k in ("exact", "within_one", "error"))
        err = error["all"] or {"median": None, "mean": None}
        print(f"| {name} | {fmt(exact['all'])} | {fmt(near['all'])} | {fmt(err['median'])} | {fmt(err['mean'])} | "
              f"{fmt(near['same_orientation'])} | {fmt(near['mirrored'])} |")
    if args.tolerance is not None:
        key = "exact" if args.tolerance == 0 else "within_one"
        print(f"{key}: " + ", ".join(f"{name} {fmt(result[key][name]['all'])}" for name in COMPARED))
    atomic_write(args.out, lambda f: f.write((json.dumps(result, indent=2) + "\n").encode()))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
