#!/usr/bin/env python
"""Convert a pretrained ResNet (this toolkit's or another project's) to Detectron2 or torchvision format.

    tools/convert.py output/pretrain/x/backbone.pth houghcl_r50.pkl --verify
    tools/convert.py moco_v2_800ep.pth.tar moco.pkl                      # layout detected
    tools/convert.py ckpt.pth r50.pth --encoder momentum                 # .pth: torchvision format
    tools/convert.py resnext50_32x4d.safetensors x.pkl --verify          # safetensors, ResNeXt, wide ResNets

Strict: every backbone tensor is converted exactly once and checked against the full key and shape table of
the inferred depth; heads, queues, ``fc``, ``num_batches_tracked`` and the other encoder are dropped on
purpose and reported. On any problem: a message naming the file and the keys, exit status 1, no output file.
"""
import _env  # noqa: F401  isort: skip  (first: outside the environment, one line on how to enter it)
import argparse
import sys

from pretrain.backbone import BackboneError
from transfer.weights import WeightsError, conversion_summary, convert, mark_verified, remove_with_sidecar


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("input", help="checkpoint: ours (full or backbone.pth), torchvision, MoCo, DenseCL, ...")
    parser.add_argument("output", help="the .pkl (Detectron2) or .pth (torchvision) to write")
    parser.add_argument("--to", choices=("detectron2", "torchvision"), default="detectron2",
                        help="detectron2 writes .pkl; torchvision .pth or .safetensors (checked before any work)")
    parser.add_argument("--encoder", choices=("query", "momentum"), default="query")
    parser.add_argument("--prefix", help="the key prefix of the backbone, when the layout is not detected")
    parser.add_argument("--drop", nargs="+", default=[], metavar="PREFIX",
                        help="also drop the keys starting with PREFIX (heads that are not known by name)")
    parser.add_argument("--verify", action="store_true",
                        help="check the written .pkl against the source in Detectron2")
    parser.add_argument("--unsafe-load", action="store_true",
                        help="allow arbitrary pickled objects in INPUT (only for files you trust)")
    args = parser.parse_args(argv)
    if args.verify and not args.output.endswith(".pkl"):
        parser.error("--verify checks Detectron2 output (.pkl)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        weights = convert(args.input, args.output, args.to, args.encoder, args.prefix, args.unsafe_load, args.drop)
    except (BackboneError, WeightsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.input}: {conversion_summary(weights)}\nwrote {args.output} and {args.output}.json")
    if args.verify:
        from transfer.finetune.coverage import verify  # Detectron2 is needed for --verify only
        try:
            verify(args.output, weights)
        except Exception as e:
            # A file that fails verification is not a usable conversion: remove it rather than leave it.
            remove_with_sidecar(args.output)
            print(f"error: verification failed, {args.output} removed: {e}", file=sys.stderr)
            return 1
        mark_verified(args.output)
        print(f"verified: {args.output}.json records it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
