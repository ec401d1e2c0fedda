#!/usr/bin/env python
"""The dense linear probe of a frozen backbone on a VOC-layout detection set (about 20 s a backbone on 2 cores).

    tools/dense_probe.py datasets/trees --weights output/demo/pretrain_houghcl/backbone.pth --seeds 5 \
        --out output/demo/dense_houghcl
    tools/dense_probe.py datasets/trees --weights RUN/model_0000040.pth RUN/model_0000060.pth --out OUT  # averaged
    tools/collect_results.py output/demo/dense_random_init output/demo/dense_houghcl --baseline dense_random_init

Every cell of the stage's feature map is labelled by whether its centre lies in a box; a logistic regression on
a seeded half of the training tiles scores the test tiles; the metric is their cell-level average precision
(x 100). Writes OUT/seed_k/final_results.json (``dense/AP``), the layout collect_results.py reads; with
``--as-seed S`` also OUT/seed_S/test_scores.pt, for ``collect_results.py --tile-bootstrap``.
"""
import _env  # noqa: F401  isort: skip  (first: outside the environment, one line on how to enter it)
import argparse
import json
import os
import sys

from pretrain.backbone import BackboneError
from pretrain.runtime import numerics
from transfer.data.voc_layout import scan_split
from transfer.readout.backbone_args import add_backbone_arguments
from transfer.readout.dense_probe import load_tiles, probe_results, probe_scores
from transfer.readout.tile_bootstrap import save_scores
from transfer.results import seed_count, seed_dir, write_final_results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("voc_dir", help="a VOC-layout folder (Annotations, ImageSets/Main, JPEGImages)")
    parser.add_argument("--train", default="train", help="training split (default: train)")
    parser.add_argument("--test", default="test", help="test split (default: test)")
    add_backbone_arguments(parser)
    parser.add_argument("--seeds", type=seed_count, default=5, help="seeds 0..K-1: the training halves (default: 5)")
    parser.add_argument("--weight-decay", type=float, default=1e-3)
    parser.add_argument("--as-seed", type=int, default=None, metavar="S",
                        help="write one result, the mean over the halves, as seed S: OUT/seed_S (to pair backbones "
                             "by their pretraining seed S; at random init S also draws the weights)")
    parser.add_argument("--out", required=True, help="run folder: OUT/seed_k/final_results.json")
    numerics.add_argument(parser)
    args = parser.parse_args(argv)
    if not numerics.switch(args.numerics):
        return 2
    try:
        # The probe asks "is this cell inside a box", whatever the class: every class of either split counts, and
        # a class the training split lacks is named (its boxes are positives the probe never trained on).
        found = {split: scan_split(args.voc_dir, split) for split in (args.train, args.test)}
        classes = sorted(set(found[args.train]) | set(found[args.test]))
        unseen = sorted(set(found[args.test]) - set(found[args.train]))
        if unseen:
            print(f"note: classes only in the {args.test} split, counted as objects like the others: "
                  f"{', '.join(unseen)}")
        train, test = (load_tiles(args.voc_dir, split, classes) for split in (args.train, args.test))
        scores = probe_scores(train, test, args.weights, range(args.seeds), args.layer, args.depth,
                              args.weight_decay, init_seed=args.as_seed or 0, encoder=args.encoder)
        results = probe_results(scores, range(args.seeds))
    except (BackboneError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    settings = {k: getattr(args, k) for k in ("voc_dir", "train", "test", "layer", "weight_decay", "seeds",
                                              "encoder")}
    # What the number measures: the same for every backbone that may be paired with this one.
    evaluation = {"metric": f"dense linear probe cell AP of {args.layer}, mean over {args.seeds} training halves",
                  "source": os.path.abspath(args.voc_dir), "split": args.test, "train": args.train,
                  "weight_decay": args.weight_decay}
    for seed, result in results.items():
        print(f"half {seed}: dense AP {result['dense']['AP']:.2f}")
    if args.as_seed is not None:
        mean = {key: sum(r["dense"][key] for r in results.values()) / len(results) for key in ("AP", "positives")}
        results = {args.as_seed: {"dense": mean}}
        # Every half's score of every test cell: what the tile bootstrap of collect_results.py resamples.
        save_scores(args.out, args.as_seed, scores, [t["file_name"] for t in test])
        print(f"seed {args.as_seed}: dense AP {mean['AP']:.2f} (mean over {args.seeds} halves)")
    for seed, result in results.items():
        write_final_results(seed_dir(args.out, seed), result, seed, " + ".join(args.weights or []),
                            json.dumps(settings), probe="dense linear", evaluation=[evaluation])
    print(f"wrote {', '.join(seed_dir(args.out, s) for s in results)} (final_results.json)")
    return 0


if __name__ == "__main__":
    numerics.reexec_if_needed()  # --numerics portable: the variables libraries read at load time
    sys.exit(main())
