"""The demo and the study as data: which backbones are pretrained with which seeds, and every stage that measures
them, as tool commands (transfer/demo.py runs them, transfer/demo_report.py writes the report).

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

from pretrain.checkpoint import checkpoint_name
from pretrain.config import load_config
from transfer.results import RESULTS_FILE, seed_dir

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
                 "mocov2": ["MODEL.LOSS_LAMBDA", 0.0]}
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
    # the dense retrieval readout (transfer/retrieval.py) of every backbone: its view size (0: none) and set
    retrieval_size: int = 112
    retrieval_set: str = "trees"
    instruments: bool = False        # the dense probe of INSTRUMENTS too, HoughCL and DenseCL
    # pretrain/numerics.py: every stage that computes runs in this mode, with its variables in the environment
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


def stages_of(plan: Plan) -> List[Stage]:
    """Every stage of the pipeline, in order."""
    out, found = plan.out, []
    found.append(Stage("fetch real images and the tree detection set", tool(plan, "fetch_data.py"), seconds=10))
    if plan.matching and "random_init" in matched(plan):
        found.append(Stage("matching accuracy of every matcher at random initialisation", computing_tool(
            plan, "eval_matching.py", "--images", "datasets/photos", "--pairs", 64, "--depth", 18, "--out",
            f"{out}/matching_random_init.json"), f"{out}/matching_random_init.json", seconds=30))
    for seed in range(plan.pretrain_seeds):
        for method, opts in plan.methods.items():
            run_dir = pretrain_dir(plan, method, seed)
            found.append(Stage(
                f"pretrain {method}, seed {seed} (ResNet-18, {plan.pretrain_iters} iterations)", tool(
                    plan, "pretrain_net.py", "--config-file", PRETRAIN_CONFIG, "--resume", *plan.pretrain_opts,
                    *opts, "NUMERICS", plan.numerics, "SEED", seed, "SOLVER.MAX_ITER", plan.pretrain_iters,
                    "OUTPUT_DIR", run_dir),
                f"{run_dir}/backbone.pth", [run_dir], f"{run_dir}/metrics.jsonl", plan.pretrain_iters,
                plan.pretrain_iters * 0.75 + 12))
    if plan.matching:
        found += matching_stages(plan)
    if plan.dense:
        for seed in range(plan.pretrain_seeds):
            for name in plan.models:
                weights = [] if name == "random_init" else ["--weights",
                                                            f"{pretrain_dir(plan, name, seed)}/backbone.pth"]
                found.append(Stage(f"dense linear probe of {name}, pretraining seed {seed}", computing_tool(
                    plan, "dense_probe.py", "datasets/trees", *weights, "--seeds", plan.dense_halves, "--as-seed",
                    seed, "--out", f"{out}/dense_{name}"),
                    os.path.join(seed_dir(f"{out}/dense_{name}", seed), RESULTS_FILE),
                    [seed_dir(f"{out}/dense_{name}", seed)], seconds=15))
        found.append(collect(plan, "dense"))
    if plan.retrieval_size and not plan.segmentation:
        found += retrieval_stages(plan)
    if plan.instruments:
        found += instrument_stages(plan)
    kinds = [kind for kind, seeds in plan.detection_seeds.items() if seeds]
    detected = list(plan.detection_models or plan.models)
    for name in [m for m in plan.methods if m in detected] if kinds else []:
        found.append(Stage(f"convert {name} (seed 0) to Detectron2 and verify", tool(
            plan, "convert.py", f"{pretrain_dir(plan, name, 0)}/backbone.pth", f"{out}/{name}_r18.pkl", "--verify"),
            f"{out}/{name}_r18.pkl", seconds=15))
    for kind in kinds:
        seeds, iters = plan.detection_seeds[kind], plan.detection_iters
        for name in detected:
            run_dir = f"{out}/{kind}_{name}"
            weights = "" if name == "random_init" else f"{out}/{name}_r18.pkl"
            found.append(Stage(
                f"{kind} Faster R-CNN R18-FPN on the trees from {name} ({iters} iterations, {seeds} seed(s))",
                computing_tool(plan, "train_net.py", "--config-file", DETECTION[kind], *TREES, "--seeds", seeds,
                               "--resume", "MODEL.WEIGHTS", weights, "SOLVER.MAX_ITER", iters, "SOLVER.STEPS",
                               f"({int(iters * 0.8)},)", "SOLVER.WARMUP_ITERS", iters // 4, "OUTPUT_DIR", run_dir),
                os.path.join(seed_dir(run_dir, seeds - 1), RESULTS_FILE), [run_dir],
                seconds=seeds * (iters * 0.6 + 25)))
        found.append(collect(plan, kind, detected))
    if plan.segmentation:
        found += segmentation_stages(plan)
        if plan.retrieval_size:
            found += retrieval_stages(plan)
    return found


def retrieval_stages(plan: Plan) -> List[Stage]:
    """The dense retrieval readout of every backbone on ``plan.retrieval_set`` (the tree tiles: boxes painted as
    labels), seeded with the pretraining seed (its views and bank patches are the same for every backbone of that
    seed), and its table."""
    found = []
    for seed in range(plan.pretrain_seeds):
        for name in plan.models:
            weights = [] if name == "random_init" else ["--weights", f"{pretrain_dir(plan, name, seed)}/backbone.pth"]
            run_dir = seed_dir(f"{plan.out}/retrieval_{name}", seed)
            found.append(Stage(f"dense retrieval of {name}, pretraining seed {seed}", computing_tool(
                plan, "dense_retrieval.py", *RETRIEVAL_SETS[plan.retrieval_set], *weights, "--size",
                plan.retrieval_size, "--seed", seed, "--out", f"{plan.out}/retrieval_{name}"),
                os.path.join(run_dir, RESULTS_FILE), [run_dir], seconds=15))
    found.append(collect(plan, "retrieval"))
    return found


def instrument_weights(plan: Plan, method: str, seed: int, instrument: str) -> List[str]:
    """The dense probe's ``--weights``/``--encoder`` arguments that read a pretraining run as ``instrument``."""
    run_dir = pretrain_dir(plan, method, seed)
    period = plan.pretrain_cfg.SOLVER.CHECKPOINT_PERIOD
    last, before = plan.pretrain_iters, (plan.pretrain_iters - 1) // period * period
    if instrument == "key":
        return ["--weights", f"{run_dir}/{checkpoint_name(last)}", "--encoder", "key"]
    if before == 0:
        recipe = " ".join([PRETRAIN_CONFIG, *map(str, plan.pretrain_opts)])
        raise ValueError(f"{recipe}: SOLVER.CHECKPOINT_PERIOD {period} leaves one checkpoint in "
                         f"{plan.pretrain_iters} iterations: the '{instrument}' reading needs two")
    return ["--weights", f"{run_dir}/{checkpoint_name(before)}", f"{run_dir}/{checkpoint_name(last)}"]


def instrument_stages(plan: Plan) -> List[Stage]:
    """The dense probe of each INSTRUMENTS reading of HoughCL's and DenseCL's runs, and one table per reading
    (random init is the same backbone under every reading)."""
    out, found, methods = plan.out, [], [m for m in METHODS if m in plan.methods]
    for instrument in INSTRUMENTS:
        for seed in range(plan.pretrain_seeds):
            for name in methods:
                run_dir = seed_dir(f"{out}/dense_{name}_{instrument}", seed)
                found.append(Stage(f"dense linear probe of {name}, pretraining seed {seed}: {INSTRUMENTS[instrument]}",
                                   computing_tool(plan, "dense_probe.py", "datasets/trees",
                                                  *instrument_weights(plan, name, seed, instrument), "--seeds",
                                                  plan.dense_halves, "--as-seed", seed, "--out",
                                                  f"{out}/dense_{name}_{instrument}"),
                                   os.path.join(run_dir, RESULTS_FILE), [run_dir], seconds=15))
        names = ["random_init", *methods]
        found.append(Stage(f"collect the dense results: {INSTRUMENTS[instrument]}", tool(
            plan, "collect_results.py", f"{out}/dense_random_init", *[f"{out}/dense_{m}_{instrument}" for m in methods],
            "--names", *names, "--baseline", "random_init", "--baseline", "densecl", "--tile-bootstrap",
            plan.tile_draws, "--out", f"{out}/dense_{instrument}_table"), seconds=5 + plan.pretrain_seeds * 4))
    return found


def matched(plan: Plan) -> List[str]:
    """The backbones whose matching accuracy the plan measures, in the order of ``plan.models``."""
    return [m for m in plan.models if plan.matching_models is None or m in plan.matching_models]


def matching_stages(plan: Plan) -> List[Stage]:
    out, found = plan.out, []
    for method in [m for m in matched(plan) if m != "random_init"]:
        title = f"matching accuracy of every matcher with the {method} backbone (seed 0)"
        found.append(Stage(title, computing_tool(
            plan, "eval_matching.py", "--images", "datasets/photos", "--pairs", 64, "--weights",
            f"{pretrain_dir(plan, method, 0)}/backbone.pth", "--out", f"{out}/matching_{method}.json"),
            f"{out}/matching_{method}.json", seconds=30))
    title = "correspondence picture: every appearance-based matcher on the houghcl backbone (seed 0)"
    found.append(Stage(title, computing_tool(
        plan, "visualize_matches.py", "--images", "datasets/photos", "--weights",
        f"{pretrain_dir(plan, 'houghcl', 0)}/backbone.pth", "--out", f"{out}/matches.png", "--seed", 3),
        f"{out}/matches.png", seconds=20))
    return found


def segmentation_stages(plan: Plan) -> List[Stage]:
    """Every pretraining seed's backbone converted, then each segmentation kind on the nuclei tiles: one run per
    (model, pretraining seed), fine-tuned with that seed, so that the tables pair by pretraining seed."""
    out, found = plan.out, []
    for seed in range(plan.pretrain_seeds):
        for name in plan.methods:
            found.append(Stage(f"convert {name} (seed {seed}) to Detectron2 and verify", tool(
                plan, "convert.py", f"{pretrain_dir(plan, name, seed)}/backbone.pth",
                f"{out}/{name}_seed{seed}_r18.pkl", "--verify"), f"{out}/{name}_seed{seed}_r18.pkl", seconds=15))
    for kind, iters in plan.segmentation.items():
        title, config = SEGMENTATION[kind]
        for seed in range(plan.pretrain_seeds):
            for name in plan.models:
                run_dir = seed_dir(f"{out}/seg_{kind}_{name}", seed)
                weights = "" if name == "random_init" else f"{out}/{name}_seed{seed}_r18.pkl"
                found.append(Stage(
                    f"{title} on the nuclei from {name}, pretraining seed {seed} ({iters} iterations)",
                    computing_tool(plan, "train_net.py", "--config-file", config, *NUCLEI, "--resume",
                                   "MODEL.WEIGHTS", weights, "SEED", seed, "SOLVER.MAX_ITER", iters, "OUTPUT_DIR",
                                   run_dir),
                    os.path.join(run_dir, RESULTS_FILE), [run_dir], seconds=iters * 0.3 + 15))
        found.append(collect(plan, f"seg_{kind}"))
    return found


def collect(plan: Plan, kind: str, models: Optional[Sequence[str]] = None) -> Stage:
    # The dense probe's tables also say how much of each spread is the test tiles (transfer/tile_bootstrap.py).
    models = list(models or plan.models)
    noise = ["--tile-bootstrap", plan.tile_draws] if kind == "dense" else []
    baselines = [arg for b in ("random_init", "densecl") if b in models for arg in ("--baseline", b)]
    return Stage(f"collect the {kind} results", tool(
        plan, "collect_results.py", *[f"{plan.out}/{kind}_{n}" for n in models], "--names", *models, *baselines,
        *noise, "--out", f"{plan.out}/{kind}_table"),
        seconds=5 + (plan.pretrain_seeds * len(models) * 2 if noise else 0))
