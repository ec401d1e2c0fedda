#!/usr/bin/env python
"""Dense retrieval of a frozen backbone: in-context scene understanding with no training (Hummingbird-style).

    tools/dense_retrieval.py --voc datasets/trees --weights output/demo/pretrain_houghcl_seed0/backbone.pth \
        --seed 0 --out output/retrieval/houghcl            # the tree tiles, boxes painted as labels
    tools/dense_retrieval.py --sem-seg nuclei_train datasets/nuclei/images datasets/nuclei/labels \
        datasets/nuclei/train.txt --sem-seg nuclei_test datasets/nuclei/images datasets/nuclei/labels \
        datasets/nuclei/test.txt --classes background nucleus --train nuclei_train --test nuclei_test --out OUT
    tools/dense_retrieval.py --train voc_2012_sbd_train_aug --test voc_2012_val --fraction 1/8 --seed 42 ...

A memory bank of the training images' patch features (augmented views) with their label shares; each test patch
takes the temperature-weighted labels of its nearest neighbours (faiss, exact); the upsampled argmax is scored by
Detectron2's SemSegEvaluator. Writes OUT/seed_S/final_results.json (``retrieval/mIoU``, ``mACC``, ``pACC``), the
layout tools/collect_results.py pairs by seed. The protocol and where it differs from open-hummingbird-eval:
docs/retrieval.md.
"""
import _env  # noqa: F401  isort: skip  (first: outside the environment, one line on how to enter it)
import argparse
import json
import os
import sys

from pretrain.backbone import BackboneError
from pretrain.runtime import numerics
from transfer.readout.backbone_args import add_backbone_arguments, add_seed_and_out
from transfer.readout.retrieval import REFERENCE, MemorySpec
from transfer.readout.retrieval_data import file_set, parse_fraction, retrieval_sets, write_file_set
from transfer.results import seed_dir, write_final_results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    data = parser.add_argument_group("data")
    data.add_argument("--voc", metavar="DIR", help="a VOC-layout detection set: its boxes are the pixel labels")
    data.add_argument("--sem-seg", nargs="+", action="append", metavar="NAME IMAGES LABELS [LIST]",
                      help="register a set of images and label PNGs (repeatable), as tools/train_net.py does")
    data.add_argument("--classes", nargs="+", help="names of the label indices 0..K-1 of --sem-seg sets")
    data.add_argument("--train", default="train", help="the training split (--voc) or registered set")
    data.add_argument("--test", default="test", help="the test split (--voc) or registered set")
    data.add_argument("--fraction", default="1/1", help="the share of training images in the bank, a seeded "
                      "file list (open-hummingbird-eval: 1/128, 1/64, 1/8, 1/1; default 1/1)")
    model = add_backbone_arguments(parser)
    model.add_argument("--dilate", action="store_true", help="layer4 at output stride 16 (dilated)")
    model.add_argument("--keep-bn", action="store_true", help="keep the BN statistics of the weights (default: "
                       "re-estimate them on the training images, as the dense probe does)")
    bank = parser.add_argument_group("memory bank and retrieval")
    bank.add_argument("--size", type=int, default=REFERENCE["size"], help="views are SIZE x SIZE (default: 224)")
    bank.add_argument("--epochs", type=int, default=1, help="augmentation epochs over the training images")
    bank.add_argument("--bank-size", type=int, default=None, help="patches kept (default: every patch)")
    bank.add_argument("--neighbours", type=int, default=REFERENCE["neighbours"], help="k (default: 30)")
    bank.add_argument("--temperature", type=float, default=REFERENCE["temperature"], help="default: 0.02")
    add_seed_and_out(parser, draws="the file set, the views and the bank's patches")
    numerics.add_argument(parser)
    args = parser.parse_args(argv)
    if not numerics.switch(args.numerics):
        return 2
    if args.voc and args.sem_seg:
        parser.error("give --voc or --sem-seg/registered sets, not both")
    for name in ("epochs", "neighbours", "size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} {getattr(args, name)}: must be at least 1")
    if args.temperature <= 0 or (args.bank_size is not None and args.bank_size < 1):
        parser.error("--temperature and --bank-size must be positive")
    from transfer.readout.retrieval_eval import evaluate
    from transfer.weights import WeightsError
    try:
        fraction = parse_fraction(args.fraction)
        train, test, classes = retrieval_sets(args.voc, args.train, args.test, os.path.join(args.out, "box_labels"),
                                              args.classes, args.sem_seg)
        train = file_set(train, fraction, args.seed)
        write_file_set(os.path.join(seed_dir(args.out, args.seed), "file_set.txt"), train)
        spec = MemorySpec(args.layer, args.size, args.epochs, args.bank_size, seed=args.seed)
        found = evaluate(train, test, classes, args.weights, spec, args.neighbours, args.temperature, args.depth,
                         args.seed, args.encoder, args.dilate, not args.keep_bn)
    except (BackboneError, WeightsError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    metrics = found["retrieval"]
    print(f"seed {args.seed}: retrieval mIoU {metrics['mIoU']:.2f}, mACC {metrics['mACC']:.2f}, "
          f"pACC {metrics['pACC']:.2f} ({found['bank']['patches']:,} patches in the bank)")
    settings = {k: getattr(args, k) for k in ("voc", "train", "test", "fraction", "layer", "dilate", "keep_bn", "size",
                                              "epochs", "bank_size", "neighbours", "temperature", "encoder")}
    # What the number measures: the same for every backbone that may be paired with this one.
    evaluation = {"metric": f"dense retrieval mIoU of {args.layer}{' dilated' if args.dilate else ''}, "
                  f"k {args.neighbours}, temperature {args.temperature}", "train": args.train, "test": args.test,
                  "source": os.path.abspath(args.voc) if args.voc else None, "fraction": args.fraction,
                  "size": args.size, "epochs": args.epochs, "bank_size": args.bank_size, "classes": classes}
    path = write_final_results(seed_dir(args.out, args.seed), {"retrieval": metrics}, args.seed,
                               " + ".join(args.weights or []), json.dumps(settings), probe="dense retrieval",
                               evaluation=[evaluation], bank=found["bank"])
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    numerics.reexec_if_needed()  # --numerics portable: the variables libraries read at load time
    sys.exit(main())
