"""The demo and the study as data: which backbones are pretrained with which seeds and how they are read (the
stages themselves: transfer/pipeline/schedule.py and readouts.py; transfer/pipeline/demo.py runs them,
transfer/pipeline/report.py writes the report).

fetch real data -> pretrain each method with each pretraining seed (ResNet-18) -> matching accuracy of every
registered matcher at C5 -> the dense linear probe of every backbone, random init drawn with the same seeds,
paired by pretraining seed -> convert the seed-0 backbones with --verify -> a Detectron2 detection stage on the
tree tiles -> tables, report.md. A claim about a method varies the pretraining seed: the dense-probe intervals
below are over pretraining seeds, not over the probe's halves of the training tiles.
"""
import dataclasses
import functools
import os
import sys
from typing import Dict, List, Optional, Sequence

from pretrain.config import load_config

TREES = ["--voc", "trees_train", "datasets/trees", "train", "--voc", "trees_test", "datasets/trees", "test"]
DETECTION = {"probe": "configs/transfer/tiny/trees_R_18_FPN_probe_cpu.yaml",
             "finetune": "configs/transfer/tiny/trees_R_18_FPN_cpu.yaml"}
NUCLEI = ["--sem-seg", "nuclei_train", "datasets/nuclei/images", "datasets/nuclei/labels", "datasets/nuclei/train.txt",
          "--sem-seg", "nuclei_test", "datasets/nuclei/images", "datasets/nuclei/labels", "datasets/nuclei/test.txt",
          "--classes", "background", "nucleus"]
# The sets the dense retrieval reads: the tree tiles through their boxes, the nuclei tiles through their label maps.
RETRIEVAL_SETS = {"trees": ["--voc", "datasets/trees"],
                  "nuclei": [*NUCLEI, "--train", "nuclei_train", "--test", "nuclei_test"]}
SEGMENTATION = {"fcn": ("FCN-D8 fine-tuning", "configs/transfer/tiny/nuclei_FCN_R18_D8_cpu.yaml"),
                "linear": ("frozen linear probe", "configs/transfer/tiny/nuclei_linear_probe_R18_cpu.yaml")}
# HoughCL (the `hough` matcher with its reference options, RHM at C5) against its baseline DenseCL.
METHODS = {"houghcl": ["MODEL.MATCHER", "hough"], "densecl": ["MODEL.MATCHER", "argmax"]}
# The study adds, with the same budget each: this toolkit's estimated-geometry extension beside the oracle it
# approximates and PixPro-style positives, and MoCo-v2.
STUDY_METHODS = {**METHODS, "hough_transform": ["MODEL.MATCHER", "hough_transform"],
                 "geometric_oracle": ["MODEL.MATCHER", "geometric"], "pixpro_style": ["MODEL.MATCHER", "threshold"],
                 "mocov2": ["MODEL.LOSS_LAMBDA", 0.0],
                 # the negative control: each query cell's positive a key cell drawn at random (not a method)
                 "random_positives": ["MODEL.MATCHER", "random"]}
PRETRAIN_CONFIG = "configs/pretrain/demo_r18_cpu.yaml"
DEMO_ITERATIONS = 60  # the demo's pretraining schedule (tools/demo.py --pretrain-iters)
# Other readings of the same pretraining runs, for HoughCL and DenseCL (the study): does one of them narrow the
# pretraining-seed interval of their difference at no extra pretraining cost? name -> description; the dense probe's
# arguments are those of ``instrument_weights``.
INSTRUMENTS = {"key": "the momentum (key) encoder of the last checkpoint",
               "mean": "the mean of the query encoders of the last two checkpoints"}


@dataclasses.dataclass
class Plan:
    """What a run of the pipeline measures."""
    out: str
    methods: Dict[str, List]
    pretrain_seeds: int = 3
    pretrain_iters: int = DEMO_ITERATIONS
    pretrain_opts: Sequence = ()   # KEY VALUE overrides of PRETRAIN_CONFIG for every method (a recipe study)
    dense_halves: int = 5          # the dense probe of one backbone: the mean over this many training halves
    tile_draws: int = 500          # resamples of the test tiles: how much of a dense-probe spread is the test set
    detection_seeds: Dict[str, int] = dataclasses.field(default_factory=lambda: {"probe": 1})
    detection_iters: int = 80
    # the backbones of the detection stages (None: every model); the demo runs HoughCL's alone, as the Detectron2
    # end of the pipeline: one run per backbone gives no spread and no verdict, so more runs would rank nothing
    detection_models: Optional[Sequence[str]] = None
    # semantic segmentation on the nuclei tiles: kind (SEGMENTATION) -> iterations; every pretraining seed's
    # backbone, fine-tuned with the same seed, so that the tables pair by pretraining seed
    segmentation: Dict[str, int] = dataclasses.field(default_factory=dict)
    matching: bool = True            # the matching-accuracy stages and the correspondence picture
    # the backbones (seed 0) whose matching accuracy is measured (None: random init and every method)
    matching_models: Optional[Sequence[str]] = None
    dense: bool = True               # the dense linear probe on the tree tiles
    # the dense retrieval readout (transfer/readout/retrieval.py) of every backbone: its view size (0: none) and set
    retrieval_size: int = 112
    retrieval_set: str = "trees"
    instruments: bool = False        # the dense probe of INSTRUMENTS too, HoughCL and DenseCL
    correspondence: bool = False     # the correspondence readout of every backbone (C4 and C5, the photos' pairs)
    # pretrain/runtime/numerics.py: every stage that computes runs in this mode, with its variables in the environment
    numerics: str = "portable"
    python: str = sys.executable

    @property
    def models(self) -> List[str]:
        return ["random_init", *self.methods]

    @functools.cached_property
    def pretrain_cfg(self):
        """The pretraining config every method starts from (a bad override fails here, before any stage)."""
        return load_config(PRETRAIN_CONFIG, [str(v) for v in self.pretrain_opts])


@dataclasses.dataclass
class Stage:
    title: str
    command: List[str]
    done_when: Optional[str] = None
    clear: Sequence[str] = ()
    progress_file: Optional[str] = None  # a metrics file whose last iteration is the progress
    total: int = 0
    seconds: float = 10.0                # expected, for the ETA


def tool(plan: Plan, name: str, *args) -> List[str]:
    return [plan.python, os.path.join("tools", name), *map(str, args)]


def computing_tool(plan: Plan, name: str, *args) -> List[str]:
    """A tool whose numbers depend on the kernels: run in the plan's numerics mode (KEY VALUE overrides last)."""
    return tool(plan, name, "--numerics", plan.numerics, *args)


def pretrain_dir(plan: Plan, method: str, seed: int) -> str:
    return f"{plan.out}/pretrain_{method}_seed{seed}"


def matched(plan: Plan) -> List[str]:
    """The backbones whose matching accuracy the plan measures, in the order of ``plan.models``."""
    return [m for m in plan.models if plan.matching_models is None or m in plan.matching_models]


def collect(plan: Plan, kind: str, models: Optional[Sequence[str]] = None) -> Stage:
    # The dense probe's tables also say how much of each spread is the test tiles (transfer/readout/tile_bootstrap.py).
    models = list(models or plan.models)
    noise = ["--tile-bootstrap", plan.tile_draws] if kind == "dense" else []
    baselines = [arg for b in ("random_init", "densecl", "random_positives") if b in models
                 for arg in ("--baseline", b)]
    return Stage(f"collect the {kind} results", tool(
        plan, "collect_results.py", *[f"{plan.out}/{kind}_{n}" for n in models], "--names", *models, *baselines,
        *noise, "--out", f"{plan.out}/{kind}_table"),
        seconds=5 + (plan.pretrain_seeds * len(models) * 2 if noise else 0))


def plan_from_args(args) -> Plan:
    """The plan of ``tools/demo.py``'s command line: the demo, ``--methods``, ``--study`` or ``--segmentation``."""
    methods = {m: STUDY_METHODS[m] for m in args.methods} if args.methods else (
        STUDY_METHODS if args.study else METHODS)
    # the retrieval reads the nuclei tiles of --segmentation whole, at their own 128 px; the trees at 112 px
    retrieval_size = args.retrieval_size if args.retrieval_size is not None else (128 if args.segmentation else 112)
    if args.segmentation:
        return Plan(out=args.out or os.path.join("output", "segmentation"), methods=methods,
                    pretrain_opts=args.pretrain_opts,
                    pretrain_seeds=args.pretrain_seeds or 3, pretrain_iters=args.pretrain_iters, detection_seeds={},
                    segmentation={"fcn": args.segmentation_iters, "linear": args.segmentation_iters},
                    matching=False, dense=False, retrieval_size=retrieval_size, retrieval_set="nuclei",
                    numerics=args.numerics)
    return Plan(out=args.out or os.path.join("output", "study" if args.study else "demo"),
                methods=methods, pretrain_opts=args.pretrain_opts,
                pretrain_seeds=args.pretrain_seeds or (10 if args.study else 3), pretrain_iters=args.pretrain_iters,
                instruments=args.study, correspondence=args.study or args.methods is not None,
                dense=args.dense_probe or args.study or args.methods is not None,
                dense_halves=args.dense_halves or (5 if args.study else 3),
                detection_seeds={"probe": args.probe_seeds, "finetune": args.finetune_seeds},
                detection_models=None if args.study or args.methods else ["houghcl"],
                matching_models=None if args.study or args.methods else ["houghcl"],
                detection_iters=args.detection_iters or (80 if args.study else 40),
                retrieval_size=retrieval_size,
                numerics=args.numerics)
