"""The stages that read the pretrained backbones without detection training: the dense linear probe, dense
retrieval, the correspondence readout, other readings of the same runs, and matching accuracy with its picture.
Every backbone of a pretraining seed is read with that seed, so that the tables pair by pretraining seed."""
import os
from typing import List

from pretrain.checkpoint import checkpoint_name
from transfer.pipeline.plan import (
    INSTRUMENTS,
    METHODS,
    PRETRAIN_CONFIG,
    RETRIEVAL_SETS,
    Plan,
    Stage,
    collect,
    computing_tool,
    matched,
    pretrain_dir,
    tool,
)
from transfer.results import RESULTS_FILE, seed_dir


def backbone_weights(plan: Plan, name: str, seed: int) -> List[str]:
    """The ``--weights`` arguments of a readout tool for one backbone (none: random init, drawn with the seed)."""
    return [] if name == "random_init" else ["--weights", f"{pretrain_dir(plan, name, seed)}/backbone.pth"]


def dense_stages(plan: Plan) -> List[Stage]:
    """The dense linear probe of every backbone on the tree tiles, random init drawn with the same seeds, and its
    table (with the tile bootstrap)."""
    out, found = plan.out, []
    for seed in range(plan.pretrain_seeds):
        for name in plan.models:
            weights = backbone_weights(plan, name, seed)
            found.append(Stage(f"dense linear probe of {name}, pretraining seed {seed}", computing_tool(
                plan, "dense_probe.py", "datasets/trees", *weights, "--seeds", plan.dense_halves, "--as-seed",
                seed, "--out", f"{out}/dense_{name}"),
                os.path.join(seed_dir(f"{out}/dense_{name}", seed), RESULTS_FILE),
                [seed_dir(f"{out}/dense_{name}", seed)], seconds=15))
    found.append(collect(plan, "dense"))
    return found


def retrieval_stages(plan: Plan) -> List[Stage]:
    """The dense retrieval readout of every backbone on ``plan.retrieval_set`` (the tree tiles: boxes painted as
    labels), seeded with the pretraining seed (its views and bank patches are the same for every backbone of that
    seed), and its table."""
    found = []
    for seed in range(plan.pretrain_seeds):
        for name in plan.models:
            weights = backbone_weights(plan, name, seed)
            run_dir = seed_dir(f"{plan.out}/retrieval_{name}", seed)
            found.append(Stage(f"dense retrieval of {name}, pretraining seed {seed}", computing_tool(
                plan, "dense_retrieval.py", *RETRIEVAL_SETS[plan.retrieval_set], *weights, "--size",
                plan.retrieval_size, "--seed", seed, "--out", f"{plan.out}/retrieval_{name}"),
                os.path.join(run_dir, RESULTS_FILE), [run_dir], seconds=15))
    found.append(collect(plan, "retrieval"))
    return found


def correspondence_stages(plan: Plan) -> List[Stage]:
    """The correspondence readout (transfer/readout/correspondence.py) of every backbone: argmax on its own
    features across the photos' view pairs drawn with the pretraining seed, at C4 and C5, and its table."""
    found = []
    for seed in range(plan.pretrain_seeds):
        for name in plan.models:
            run_dir = seed_dir(f"{plan.out}/correspondence_{name}", seed)
            found.append(Stage(f"correspondence readout of {name}, pretraining seed {seed}", computing_tool(
                plan, "correspondence.py", "--images", "datasets/photos", *backbone_weights(plan, name, seed),
                "--seed", seed, "--out", f"{plan.out}/correspondence_{name}"),
                os.path.join(run_dir, RESULTS_FILE), [run_dir], seconds=10))
    found.append(collect(plan, "correspondence"))
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


def matching_stages(plan: Plan) -> List[Stage]:
    out, found = plan.out, []
    for method in [m for m in matched(plan) if m != "random_init"]:
        title = f"matching accuracy of every matcher with the {method} backbone (seed 0)"
        found.append(Stage(title, computing_tool(
            plan, "eval_matching.py", "--images", "datasets/photos", "--pairs", 64, "--weights",
            f"{pretrain_dir(plan, method, 0)}/backbone.pth", "--out", f"{out}/matching_{method}.json"),
            f"{out}/matching_{method}.json", seconds=30))
    drawn = "houghcl" if "houghcl" in plan.methods else next(iter(plan.methods))  # a backbone the plan trains
    title = f"correspondence picture: every appearance-based matcher on the {drawn} backbone (seed 0)"
    found.append(Stage(title, computing_tool(
        plan, "visualize_matches.py", "--images", "datasets/photos", "--weights",
        f"{pretrain_dir(plan, drawn, 0)}/backbone.pth", "--out", f"{out}/matches.png", "--seed", 3),
        f"{out}/matches.png", seconds=20))
    return found
