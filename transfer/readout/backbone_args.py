"""The backbone arguments every readout tool takes (``tools/dense_probe.py``, ``dense_retrieval.py``,
``correspondence.py``): which weights, which encoder of a checkpoint, the depth at random init, the stage read; and
the seed and output folder of a readout that writes ``OUT/seed_SEED/final_results.json``."""
import argparse

from pretrain.backbone import STAGES


def add_backbone_arguments(parser: argparse.ArgumentParser, layer: bool = True) -> argparse._ArgumentGroup:
    group = parser.add_argument_group("backbone")
    group.add_argument("--weights", nargs="+", help="backbone.pth, a pretraining checkpoint, another project's "
                       "weights or a converted .pkl (default: random init); several checkpoints of one run: their "
                       "averaged weights")
    group.add_argument("--encoder", default="query", choices=("query", "key"),
                       help="the encoder read in a pretraining checkpoint: query (default) or key (momentum)")
    group.add_argument("--depth", type=int, default=18, help="ResNet depth at random init (default: 18)")
    if layer:
        group.add_argument("--layer", default="layer3", choices=STAGES, help="stage read (default: layer3, C4)")
    return group


def add_seed_and_out(parser: argparse.ArgumentParser, draws: str) -> None:
    """``--seed`` (it draws ``draws`` and the weights at random init) and ``--out``: OUT/seed_SEED."""
    parser.add_argument("--seed", type=int, default=0, help=f"draws {draws} and the weights at random init; "
                        "results go to OUT/seed_SEED (default: 0)")
    parser.add_argument("--out", required=True, help="OUT/seed_SEED/final_results.json")
