"""Every stage of the demo, the study and the segmentation runs, in order: fetch real data -> pretrain each method
with each pretraining seed -> the readouts (transfer/pipeline/readouts.py) -> convert with --verify -> Detectron2
detection on the tree tiles -> semantic segmentation on the nuclei tiles -> tables."""
import os
from typing import List

from transfer.pipeline.plan import (
    DETECTION,
    NUCLEI,
    PRETRAIN_CONFIG,
    SEGMENTATION,
    TREES,
    Plan,
    Stage,
    collect,
    computing_tool,
    matched,
    pretrain_dir,
    tool,
)
from transfer.pipeline.readouts import (
    correspondence_stages,
    dense_stages,
    instrument_stages,
    matching_stages,
    retrieval_stages,
)
from transfer.results import RESULTS_FILE, seed_dir

# The readouts read a run's backbone.pth and its last two checkpoints (the "key" and "mean" instruments), so the
# pipeline keeps two: at 143 MB a checkpoint of the demo's ResNet-18 (model, momentum encoder, two queues, optimizer),
# a ten-seed regime of three methods at 240 iterations would otherwise keep 30 GB. --pretrain-opts may override it.
KEEP_CHECKPOINTS = ("SOLVER.KEEP_LAST", 2)


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
                    plan, "pretrain_net.py", "--config-file", PRETRAIN_CONFIG, "--resume", *KEEP_CHECKPOINTS,
                    *plan.pretrain_opts,
                    *opts, "NUMERICS", plan.numerics, "SEED", seed, "SOLVER.MAX_ITER", plan.pretrain_iters,
                    "OUTPUT_DIR", run_dir),
                f"{run_dir}/backbone.pth", [run_dir], f"{run_dir}/metrics.jsonl", plan.pretrain_iters,
                plan.pretrain_iters * 0.75 + 12))
    if plan.matching:
        found += matching_stages(plan)
    if plan.dense:
        found += dense_stages(plan)
    if plan.retrieval_size and not plan.segmentation:
        found += retrieval_stages(plan)
    if plan.instruments:
        found += instrument_stages(plan)
    if plan.correspondence:
        found += correspondence_stages(plan)
    found += detection_stages(plan)
    if plan.segmentation:
        found += segmentation_stages(plan)
        if plan.retrieval_size:
            found += retrieval_stages(plan)
    return found


def detection_stages(plan: Plan) -> List[Stage]:
    """The seed-0 backbones converted with --verify, then each detection kind (probe, fine-tuning) on the tree
    tiles, and its table."""
    out, found = plan.out, []
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
