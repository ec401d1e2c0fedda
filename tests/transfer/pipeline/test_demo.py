"""transfer/pipeline/plan.py as data: the segmentation stages pair every run by pretraining seed; the demo keeps its
own."""
import os

import pytest

from transfer.pipeline.plan import INSTRUMENTS, METHODS, STUDY_METHODS, Plan
from transfer.pipeline.schedule import stages_of


def test_segmentation_runs_pair_by_pretraining_seed():
    plan = Plan(out="o", methods=METHODS, pretrain_seeds=2, detection_seeds={}, segmentation={"fcn": 7, "linear": 5},
                matching=False, dense=False, retrieval_size=0)
    stages = stages_of(plan)
    runs = [s.command for s in stages if s.command[1] == "tools/train_net.py"]
    assert len(runs) == 2 * 2 * 3  # kinds x pretraining seeds x (random init, houghcl, densecl)
    for command in runs:
        seed, out, weights = (command[command.index(key) + 1] for key in ("SEED", "OUTPUT_DIR", "MODEL.WEIGHTS"))
        assert out.endswith(f"/seed_{seed}") and (weights == "" or weights.endswith(f"_seed{seed}_r18.pkl"))
    converted = {s.done_when for s in stages if "convert.py" in s.command[1]}
    assert converted == {f"o/{m}_seed{k}_r18.pkl" for m in METHODS for k in range(2)}
    assert not any("dense_probe.py" in s.command[1] or "eval_matching.py" in s.command[1] for s in stages)
    assert [s.title for s in stages if "collect_results.py" in s.command[1]] == [
        "collect the seg_fcn results", "collect the seg_linear results"]


def test_the_demo_has_no_segmentation_stage():
    stages = stages_of(Plan(out="o", methods=METHODS))
    assert len(stages) == 37 and not any("--sem-seg" in s.command for s in stages)
    assert sum("convert.py" in s.command[1] for s in stages) == len(METHODS)


def test_the_retrieval_readout_reads_every_backbone_paired_by_pretraining_seed():
    stages = stages_of(Plan(out="o", methods=METHODS, pretrain_seeds=2, retrieval_size=112))
    runs = [s.command for s in stages if s.command[1] == "tools/dense_retrieval.py"]
    assert len(runs) == 2 * 3
    for command in runs:
        seed, out, size = (command[command.index(key) + 1] for key in ("--seed", "--out", "--size"))
        weights = command[command.index("--weights") + 1] if "--weights" in command else None
        assert size == "112" and command[command.index("--numerics") + 1] == "portable"
        assert weights is None and out == "o/retrieval_random_init" or weights == (
            f"o/pretrain_{out.split('_', 1)[1]}_seed{seed}/backbone.pth")
    table, = [s.command for s in stages if s.command[-1] == "o/retrieval_table"]
    assert table[2:5] == ["o/retrieval_random_init", "o/retrieval_houghcl", "o/retrieval_densecl"]
    without = stages_of(Plan(out="o", methods=METHODS, retrieval_size=0))
    assert not any("dense_retrieval.py" in s.command[1] for s in without)


def test_the_study_reads_houghcl_and_densecl_runs_otherwise_paired_by_pretraining_seed():
    plan = Plan(out="o", methods=STUDY_METHODS, pretrain_seeds=2, detection_seeds={}, instruments=True)
    stages = stages_of(plan)
    by_out = {}
    for stage in stages:
        if "dense_probe.py" in stage.command[1]:
            by_out.setdefault(stage.command[stage.command.index("--out") + 1], []).append(stage.command)
    assert {o for o in by_out if o.endswith(("_key", "_mean"))} == {
        f"o/dense_{m}_{i}" for m in METHODS for i in INSTRUMENTS}
    for seed in range(2):
        key, = [c for c in by_out["o/dense_houghcl_key"] if c[c.index("--as-seed") + 1] == str(seed)]
        assert key[key.index("--weights") + 1:key.index("--weights") + 4] == [
            f"o/pretrain_houghcl_seed{seed}/model_0000060.pth", "--encoder", "key"]
        mean, = [c for c in by_out["o/dense_densecl_mean"] if c[c.index("--as-seed") + 1] == str(seed)]
        # checkpoints every 40 iterations (configs/pretrain/demo_r18_cpu.yaml): the last two are 40 and 60
        assert mean[mean.index("--weights") + 1:mean.index("--weights") + 3] == [
            f"o/pretrain_densecl_seed{seed}/model_0000040.pth", f"o/pretrain_densecl_seed{seed}/model_0000060.pth"]
    assert all(len(by_out[f"o/dense_{m}_{i}"]) == 2 for m in METHODS for i in INSTRUMENTS)
    tables = [s.command for s in stages if "collect_results.py" in s.command[1]]
    mean_table, = [c for c in tables if c[-1] == "o/dense_mean_table"]
    assert mean_table[2:5] == ["o/dense_random_init", "o/dense_houghcl_mean", "o/dense_densecl_mean"]
    # every dense table says how much of each spread is the test tiles
    for table in (mean_table, *[c for c in tables if c[-1] == "o/dense_table"]):
        assert table[table.index("--tile-bootstrap") + 1] == "500"
    assert not any("_key" in c or "_mean" in c for s in stages_of(Plan(out="o", methods=STUDY_METHODS))
                   for c in s.command)


def test_a_reading_that_needs_two_checkpoints_is_refused_when_the_run_keeps_one():
    plan = Plan(out="o", methods=METHODS, pretrain_seeds=1, pretrain_iters=30, detection_seeds={}, instruments=True)
    with pytest.raises(ValueError, match="CHECKPOINT_PERIOD 40 leaves one checkpoint in 30 iterations"):
        stages_of(plan)


def test_a_recipe_override_reaches_every_pretraining_run_and_the_readings_follow_it():
    plan = Plan(out="o", methods=METHODS, pretrain_seeds=1, detection_seeds={}, instruments=True,
                pretrain_opts=["SOLVER.BASE_LR", 0.25, "SOLVER.CHECKPOINT_PERIOD", 25])
    stages = stages_of(plan)
    pretraining = [s.command for s in stages if "pretrain_net.py" in s.command[1]]
    assert len(pretraining) == 2
    for command in pretraining:
        at = command.index("SOLVER.BASE_LR")
        assert command[at:at + 4] == ["SOLVER.BASE_LR", "0.25", "SOLVER.CHECKPOINT_PERIOD", "25"]
    mean, = [s.command for s in stages if s.command[-1] == "o/dense_houghcl_mean"]
    # checkpoints every 25 iterations of 60: the last two are 50 and 60
    assert mean[mean.index("--weights") + 1:mean.index("--weights") + 3] == [
        "o/pretrain_houghcl_seed0/model_0000050.pth", "o/pretrain_houghcl_seed0/model_0000060.pth"]


def test_demo_tool_refuses_a_bad_recipe_or_a_study_without_its_baseline_in_one_line(tmp_path, run_tool,
                                                                                    run_script):
    bad = run_tool("demo", "--out", tmp_path / "o", "--pretrain-opts", "SOLVER.NOPE", 1)
    assert bad.returncode == 1 and "--pretrain-opts SOLVER.NOPE 1: " in bad.stderr and "SOLVER.NOPE" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not os.path.exists(tmp_path / "o")
    alone = run_script("demo.py", "--out", tmp_path / "o", "--methods", "houghcl")
    assert alone.returncode == 2 and "densecl is the tables' baseline" in alone.stderr
    assert not os.path.exists(tmp_path / "o")


def test_the_segmentation_demo_reads_the_nuclei_by_retrieval_too():
    plan = Plan(out="o", methods=METHODS, pretrain_seeds=2, detection_seeds={}, segmentation={"fcn": 5},
                matching=False, dense=False, retrieval_size=128, retrieval_set="nuclei")
    runs = [s.command for s in stages_of(plan) if s.command[1] == "tools/dense_retrieval.py"]
    assert len(runs) == 2 * 3 and all("--sem-seg" in c and c[c.index("--test") + 1] == "nuclei_test" for c in runs)


def test_the_report_says_the_demo_regime_cannot_rank_and_other_regimes_are_read_from_their_controls():
    from transfer.pipeline.plan import METHODS, Plan
    from transfer.pipeline.report import regime_note
    demo = regime_note(Plan(out="x", methods=METHODS))
    assert demo.startswith("**A plumbing demonstration, not a ranking.**") and "section 2" in demo
    assert "Section 4" in demo and "level with DenseCL" in demo
    for other in (Plan(out="x", methods=METHODS, pretrain_iters=240),
                  Plan(out="x", methods=METHODS, pretrain_opts=["SOLVER.BASE_LR", "0.25"]),
                  Plan(out="x", methods=METHODS, pretrain_seeds=10)):
        assert "decided by its positive controls" in regime_note(other)


def test_the_demo_detects_with_houghcl_alone_and_the_study_with_every_backbone(monkeypatch):
    """The demo's detection stage is the Detectron2 end of the pipeline (one run: no verdict), so it runs once."""
    from tests.conftest import load_tool
    demo = load_tool("demo")
    plans = []
    monkeypatch.setattr(demo, "run", lambda plan, root, force: plans.append(plan) or (_ for _ in ()).throw(
        SystemExit(0)))
    for argv in ([], ["--study"]):
        try:
            demo.main(argv + ["--numerics", "fast"])
        except SystemExit:
            pass
    from transfer.pipeline.schedule import stages_of
    detected = [[s.title for s in stages_of(plan) if s.title.startswith("probe Faster")] for plan in plans]
    assert [len(d) for d in detected] == [1, 1 + len(STUDY_METHODS)] and "from houghcl" in detected[0][0]
    assert [plan.dense_halves for plan in plans] == [3, 5] and [plan.detection_iters for plan in plans] == [40, 80]
    # the demo reads with one readout, dense retrieval (the cheaper one); the study with both
    assert [plan.dense for plan in plans] == [False, True]
    assert [any("dense_probe.py" in s.command[1] for s in stages_of(plan)) for plan in plans] == [False, True]
    from transfer.pipeline.plan import matched
    assert [matched(plan) for plan in plans] == [["houghcl"], plans[1].models]
    assert sum(s.title.startswith("matching accuracy") for s in stages_of(plans[0])) == 1


def test_the_controls_read_every_backbone_by_correspondence_against_both_baselines():
    methods = {m: STUDY_METHODS[m] for m in ("densecl", "geometric_oracle", "random_positives")}
    stages = stages_of(Plan(out="o", methods=methods, pretrain_seeds=2, detection_seeds={}, correspondence=True))
    assert [s.command[s.command.index("MODEL.MATCHER") + 1] for s in stages if "pretrain_net.py" in s.command[1]] == [
        "argmax", "geometric", "random"] * 2
    runs = [s.command for s in stages if s.command[1] == "tools/correspondence.py"]
    assert len(runs) == 2 * 4  # pretraining seeds x (random init + three methods)
    for command in runs:
        seed, out = (command[command.index(key) + 1] for key in ("--seed", "--out"))
        name = out.split("correspondence_", 1)[1]
        assert ("--weights" not in command) == (name == "random_init")
        if name != "random_init":
            assert command[command.index("--weights") + 1] == f"o/pretrain_{name}_seed{seed}/backbone.pth"
    table, = [s.command for s in stages if s.command[-1] == "o/correspondence_table"]
    baselines = [table[i + 1] for i, word in enumerate(table) if word == "--baseline"]
    assert baselines == ["random_init", "densecl", "random_positives"]
    picture, = [s.command for s in stages if s.command[1] == "tools/visualize_matches.py"]
    assert picture[picture.index("--weights") + 1] == "o/pretrain_densecl_seed0/backbone.pth"  # no houghcl here
    plain = stages_of(Plan(out="o", methods=METHODS))
    assert not any("correspondence.py" in s.command[1] for s in plain)  # the demo keeps its 15 minutes


def test_each_pretraining_run_keeps_the_two_checkpoints_the_readouts_read_unless_the_recipe_says_otherwise():
    from pretrain.config import load_config

    def kept(pretrain_opts):
        plan = Plan(out="o", methods=METHODS, pretrain_seeds=1, detection_seeds={}, pretrain_opts=pretrain_opts)
        command = [s.command for s in stages_of(plan) if "pretrain_net.py" in s.command[1]][0]
        opts = command[command.index("--resume") + 1:]
        return load_config(command[command.index("--config-file") + 1], opts).SOLVER.KEEP_LAST

    assert kept([]) == 2
    assert kept(["SOLVER.KEEP_LAST", 0]) == 0
