#!/usr/bin/env python
"""Matching accuracy of every registered matcher (pretrain/matching.py) on the same features of real view pairs.

    tools/eval_matching.py --images datasets/photos --pairs 96 --seed 0 --out output/matching.json
    tools/eval_matching.py --images datasets/photos --weights output/pretrain/x/backbone.pth --out m.json

Over K seeded pairs of MoCo-v2 views of real images, for the query cells with a true partner: the fraction whose
selected key cell IS the partner (exact), the fraction within one cell of it, and the sub-cell error (key cells
from the selected cell's centre to the exact partner point), split by orientation and by the crops' scale
ratio in the JSON. Random initialisation when no weights are given. Each matcher's options come from the
pretraining config (``--config-file``, default: the built-in defaults) and KEY VALUE overrides. ``--ablation``:
the options of the two Hough matchers, one change at a time from each one's defaults, on the same pairs.
"""
import argparse
import json
import sys

from pretrain.backbone import BackboneError
from pretrain.config import ConfigError, load_config
from pretrain.files import atomic_write
from pretrain.matching import MATCHERS, options_from_cfg
from pretrain.matching_eval import ABLATION, matching_study, registered_variants


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
    parser.add_argument("--config-file", default="", help="pretraining config: each matcher's options")
    parser.add_argument("--out", required=True, help="JSON file to write (with --ablation: also OUT.md)")
    parser.add_argument("--ablation", action="store_true",
                        help="the options of both Hough matchers at C5, one change at a time from the defaults")
    parser.add_argument("opts", nargs="*", help="KEY VALUE overrides of the config (e.g. MODEL.HOUGH.VOTE softmax)")
    args = parser.parse_args(argv)
    if args.ablation:
        return ablation(args)
    try:
        cfg = load_config(args.config_file, args.opts)
        result = matching_study(args.images, args.weights, args.depth, args.pairs, args.seed, args.size, args.layer,
                                registered_variants(cfg.MODEL))
    except (ConfigError, BackboneError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.pairs} view pairs of {result['counts']['images']} images, grid {result['counts']['grid']}, "
          f"{result['counts']['query_cells_with_partner']} query cells with a true partner")

    def fmt(v):
        return "-" if v is None else f"{v:.3f}"

    print("| matcher | exact | within one | median error | mean error | within one, same orientation | mirrored |\n"
          "|---|---|---|---|---|---|---|")
    for name in MATCHERS:
        exact, near, error = (result[k][name] for k in ("exact", "within_one", "error"))
        err = error["all"] or {"median": None, "mean": None}
        print(f"| {name}: {MATCHERS[name].label} | {fmt(exact['all'])} | {fmt(near['all'])} | {fmt(err['median'])} | "
              f"{fmt(err['mean'])} | "
              f"{fmt(near['same_orientation'])} | {fmt(near['mirrored'])} |")
    for name, stats in result["matcher_stats"].items():
        for key, value in stats.items():
            print(f"{name} {key}: {value:.3f}")
    if args.tolerance is not None:
        key = "exact" if args.tolerance == 0 else "within_one"
        print(f"{key}: " + ", ".join(f"{name} {fmt(result[key][name]['all'])}" for name in MATCHERS))
    atomic_write(args.out, lambda f: f.write((json.dumps(result, indent=2) + "\n").encode()))
    print(f"wrote {args.out}")
    return 0


def ablation(args) -> int:
    """Every row of ABLATION on the same pairs and features; a Markdown table with each row's overrides."""
    variants, overrides = {}, {}
    try:
        for name, (matcher, extra) in ABLATION.items():
            cfg = load_config(args.config_file, list(args.opts) + extra)
            variants[name], overrides[name] = (matcher, options_from_cfg(cfg.MODEL, matcher)), extra
        cfg = load_config(args.config_file, list(args.opts))
        for name in ("argmax", "threshold", "geometric"):  # the baselines and the oracle, beside every row
            variants[name], overrides[name] = (name, options_from_cfg(cfg.MODEL, name)), []
        result = matching_study(args.images, args.weights, args.depth, args.pairs, args.seed, args.size, "layer4",
                                variants)
    except (ConfigError, BackboneError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    rows = {name: {"matcher": variants[name][0], "overrides": overrides[name], **summary(result, name),
                   **result["matcher_stats"][name]} for name in variants}
    weights = f" --weights {args.weights}" if args.weights else ""
    base = (f"tools/eval_matching.py --images {args.images} --pairs {args.pairs} --seed {args.seed} --size {args.size}"
            f"{weights}{f' --depth {args.depth}' if args.depth else ''} --ablation --out x.json")
    grid = result["counts"]["grid"]
    lines = [f"ResNet-{result['settings']['depth']}, {'weights ' + args.weights if args.weights else 'random init'}, "
             f"C5 ({grid[0]} x {grid[1]}), {args.pairs} view pairs, {result['counts']['query_cells_with_partner']} "
             f"query cells with a true partner; `{base}`", "",
             "| matcher and options | exact | within one | median error | mean error | cells outside the key view "
             "(hough_transform) | overrides |", "|---|---|---|---|---|---|---|"]
    for name, row in rows.items():
        outside = f"{row['outside_share']:.3f}" if "outside_share" in row else "-"
        lines.append(f"| {name} | {row['exact']:.3f} | {row['within_one']:.3f} | {row['median_error']:.2f} | "
                     f"{row['mean_error']:.2f} | {outside} | {' '.join(row['overrides']) or '(nothing)'} |")
    table = "\n".join(lines) + "\n"
    print(table)
    atomic_write(args.out, lambda f: f.write((json.dumps({"rows": rows, "counts": result["counts"],
                                                          "settings": result["settings"]}, indent=2) + "\n").encode()))
    atomic_write(args.out + ".md", lambda f: f.write(table.encode()))
    print(f"wrote {args.out} and {args.out}.md")
    return 0


def summary(result, matcher):
    error = result["error"][matcher]["all"] or {"median": float("nan"), "mean": float("nan")}
    return {"exact": result["exact"][matcher]["all"], "within_one": result["within_one"][matcher]["all"],
            "median_error": error["median"], "mean_error": error["mean"]}


if __name__ == "__main__":
    sys.exit(main())
