#!/usr/bin/env python
"""Matching accuracy of argmax, Hough (translation, similarity) and the geometric oracle on the same features.

    tools/eval_matching.py --images datasets/photos --pairs 96 --seed 0 --out output/matching.json
    tools/eval_matching.py --images datasets/photos --weights output/pretrain/x/backbone.pth --out m.json

Over K seeded pairs of MoCo-v2 views of real images, the fraction of query cells with a true partner whose
selected key cell lies within one cell of it. Random initialisation when no weights are given. Hough settings
come from the pretraining config (``--config-file``, default: the built-in defaults) and KEY VALUE overrides.
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
    print("| matcher | all | same orientation | mirrored |\n|---|---|---|---|")
    for name in COMPARED:
        parts = result["by_orientation"][name]
        cells = [f"{v:.3f}" if v is not None else "-" for v in (parts["same_orientation"], parts["mirrored"])]
        print(f"| {name} | {result[name]:.3f} | {cells[0]} | {cells[1]} |")
    atomic_write(args.out, lambda f: f.write((json.dumps(result, indent=2) + "\n").encode()))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
