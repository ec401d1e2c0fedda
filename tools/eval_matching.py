#!/usr/bin/env python
"""Matching accuracy of every registered matcher (pretrain/matchers/__init__.py) on the same real view pairs.

    tools/eval_matching.py --images datasets/photos --pairs 96 --seed 0 --out output/matching.json
    tools/eval_matching.py --images datasets/photos --weights output/pretrain/x/backbone.pth --out m.json

Over K seeded pairs of MoCo-v2 views of real images, for the query cells with a true partner: the fraction whose
selected key cell IS the partner (exact), within one cell of it, and the sub-cell error (key cells from the
selected cell's centre to the exact partner point), split by orientation and crop scale ratio in the JSON. Random
init when no weights are given. Each matcher's options come from the pretraining config (``--config-file``,
default: the built-in defaults) and KEY VALUE overrides. ``--ablation``: the options of the two Hough matchers,
one change at a time from each one's defaults, on the same pairs (also OUT.md, with the command).

    tools/eval_matching.py --images datasets/photos --backbones 0=A/backbone.pth 1=B/backbone.pth 2=C/backbone.pth \
        --pair-sets 0 1 2 --out c5.json

``--backbones``: the `hough` options against the reference on backbones of several pretraining seeds, each over the
``--pair-sets`` seeds of view pairs, paired by pretraining seed (transfer/readout/matching_seeds.py; also OUT.md).
"""
import _env  # noqa: F401  isort: skip  (first: outside the environment, one line on how to enter it)
import argparse
import shlex
import sys

from pretrain.backbone import BackboneError
from pretrain.config import ConfigError, load_config
from pretrain.evaluation.accuracy import matching_study, registered_variants
from pretrain.evaluation.report import ablation_markdown, ablation_rows, ablation_variants, accuracy_text, write_study
from pretrain.runtime import numerics
from transfer.readout.matching_seeds import seeds_markdown, seeds_study


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", required=True, help="a folder of images or a list file")
    parser.add_argument("--weights", help="backbone.pth or a pretraining checkpoint (default: random init)")
    parser.add_argument("--depth", type=int, help="ResNet depth (default: that of --weights; 18 at random init)")
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--layer", default="layer4", choices=("layer3", "layer4"))
    parser.add_argument("--tolerance", type=int, choices=(0, 1), default=None,
                        help="summary line for one tolerance only (0: exact cell, 1: within one cell)")
    parser.add_argument("--config-file", default="", help="pretraining config: each matcher's options")
    parser.add_argument("--out", required=True, help="JSON file to write (with --ablation: also OUT.md)")
    parser.add_argument("--ablation", action="store_true",
                        help="the options of both Hough matchers at C5, one change at a time from the defaults")
    parser.add_argument("--backbones", nargs="+", metavar="SEED=PATH", type=seed_and_path,
                        help="the `hough` options against the reference over these backbones' pretraining seeds")
    parser.add_argument("--pair-sets", nargs="+", type=int, default=[0, 1, 2], help="with --backbones: pair seeds")
    parser.add_argument("opts", nargs="*", help="KEY VALUE overrides of the config (e.g. MODEL.HOUGH.VOTE softmax)")
    numerics.add_argument(parser)
    args = parser.parse_args(argv)
    if not numerics.switch(args.numerics):
        return 2
    if args.backbones:
        return seeds_main(args)
    try:
        if args.ablation:
            variants, overrides = ablation_variants(args.config_file, args.opts)
            layer = "layer4"
        else:
            variants, layer = registered_variants(load_config(args.config_file, args.opts).MODEL), args.layer
        result = matching_study(args.images, args.weights, args.depth, args.pairs, args.seed, args.size, layer,
                                variants)
    except (ConfigError, BackboneError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.ablation:
        rows = ablation_rows(result, variants, overrides)
        command = shlex.join(["tools/eval_matching.py", *map(str, sys.argv[1:] if argv is None else argv)])
        table = ablation_markdown(rows, result, args.weights, command)
        write_study(args.out, {"rows": rows, "counts": result["counts"], "settings": result["settings"]}, table)
        return 0
    print(accuracy_text(result, args.pairs, args.tolerance))
    write_study(args.out, result)
    return 0


def seed_and_path(item: str):
    seed, _, path = item.partition("=")
    if not seed.isdigit() or not path:
        raise argparse.ArgumentTypeError(f"takes SEED=PATH items, got {item!r}")
    return int(seed), path


def seeds_main(args) -> int:
    try:
        study = seeds_study(dict(args.backbones), args.images, args.pair_sets, args.pairs, args.size, args.config_file,
                            args.opts)
    except (ConfigError, BackboneError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    write_study(args.out, study, seeds_markdown(study))
    return 0


if __name__ == "__main__":
    numerics.reexec_if_needed()  # --numerics portable: the variables libraries read at load time
    sys.exit(main())
