"""The command line of ``tools/train_net.py``: Detectron2's arguments plus this toolkit's, ``KEY VALUE`` overrides
last."""
import sys

from detectron2.engine import default_argument_parser

from pretrain.config import CONFIG_KEY, overrides_after_flags
from pretrain.runtime import numerics
from transfer.results import seed_count


def argument_parser():
    """Detectron2's arguments plus this add-on's (``KEY VALUE`` overrides stay last)."""
    parser = default_argument_parser()
    parser.add_argument("--allow-partial", action="store_true",
                        help="train even if MODEL.WEIGHTS leaves some backbone parameters random")
    parser.add_argument("--seeds", type=seed_count, default=None, metavar="K",
                        help="run K fine-tunings, seeds 0..K-1, into OUTPUT_DIR/seed_k/ (K = 1: seed 0)")
    parser.add_argument("--voc", nargs=3, action="append", default=[], metavar=("NAME", "DIR", "SPLIT"),
                        help="register a VOC-layout dataset; a DIR named VOC2007 is scored with the VOC07 "
                             "11-point metric, others with the area metric")
    parser.add_argument("--coco", nargs=3, action="append", default=[], metavar=("NAME", "JSON", "IMAGES"),
                        help="register a COCO-json dataset")
    sem_seg = parser.add_argument(
        "--sem-seg", nargs="+", action="append", default=[], metavar="NAME IMAGES LABELS [LIST]",
        help="register images with label maps (PNG of class indices, 255 = unlabelled) for semantic segmentation; "
             "LIST: a file of image names (file stems), default: every label map")
    sem_seg.min_values = 3  # kept with the flag even when a folder name looks like a KEY (overrides_after_flags)
    parser.add_argument("--classes", nargs="+", default=None, metavar="NAME",
                        help="the class list of the --voc sets (default: the union of the names in all of them), or "
                             "the names of the class indices 0..K-1 of the --sem-seg sets (default: class_0 ...)")
    numerics.add_argument(parser)
    return parser


def overrides_last(argv):
    """``argv`` with every ``KEY VALUE`` override after the flags of ``tools/train_net.py`` (see
    ``pretrain.config.overrides_after_flags``)."""
    return overrides_after_flags(argv, argument_parser())


def parse_args(argv=None):
    parser = argument_parser()
    args = parser.parse_args(overrides_after_flags(list(sys.argv[1:] if argv is None else argv), parser))
    # A "+" flag (--sem-seg, --classes) last also took the KEY VALUE overrides after it: give them back.
    for values, first in [(v, 3) for v in args.sem_seg] + [(args.classes or [], 1)]:
        cut = next((i for i in range(first, len(values)) if CONFIG_KEY.match(values[i])), len(values))
        args.opts, values[cut:] = values[cut:] + list(args.opts), []
    return args
