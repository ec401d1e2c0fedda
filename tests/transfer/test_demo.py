"""transfer/demo.py as data: the segmentation stages pair every run by pretraining seed; the demo keeps its own."""
from transfer.demo import METHODS, Plan, stages_of


def test_segmentation_runs_pair_by_pretraining_seed():
    plan = Plan(out="o", methods=METHODS, pretrain_seeds=2, detection_seeds={}, segmentation={"fcn": 7, "linear": 5},
                matching=False, dense=False)
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
    assert len(stages) == 27 and not any("--sem-seg" in s.command for s in stages)
    assert sum("convert.py" in s.command[1] for s in stages) == len(METHODS)
