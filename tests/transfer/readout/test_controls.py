"""The controls' curve: paired contrasts per regime and readout, the rule, the table and the figures."""
import json
import random

import pytest

from transfer.readout.controls import regime_contrasts, verdict, write_curve


def write_regime(out, seeds, means, readouts=(("correspondence", "correspondence", "C5_exact"),
                                              ("retrieval", "retrieval", "mIoU"))):
    """Readout folders of a regime: each model's value per seed = its mean + a per-seed draw the models share
    (the pretraining seed's luck) + a small noise of its own."""
    rng = random.Random(0)
    for seed in range(seeds):
        shared = rng.gauss(0, 2.0)
        for model, mean in means.items():
            for prefix, task, metric in readouts:
                folder = out / f"{prefix}_{model}" / f"seed_{seed}"
                folder.mkdir(parents=True, exist_ok=True)
                value = mean + shared + rng.gauss(0, 0.1)
                (folder / "final_results.json").write_text(json.dumps(
                    {"results": {task: {metric: value}}, "seed": seed, "weights": f"{model}.pth"}))
            run = out / f"pretrain_{model}_seed{seed}"
            run.mkdir(parents=True, exist_ok=True)
            rows = [{"iteration": i, "loss_dense": mean - i, "pos_sim_dense": 0.1 * i, "acc_positives": 0.5}
                    for i in (1, 2)]
            (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            (run / "backbone.pth").write_bytes(b"finished")


def test_the_rule_passes_only_with_the_oracle_ahead_of_both_over_ten_seeds(tmp_path):
    ordered = {"geometric_oracle": 12.0, "densecl": 10.0, "random_positives": 11.0}
    write_regime(tmp_path / "ten", 10, ordered)
    found = regime_contrasts(str(tmp_path / "ten"))
    c5 = found["correspondence C5"]
    assert c5["oracle - argmax"]["mean"] == pytest.approx(2.0, abs=0.2)
    assert c5["argmax - random"]["ci95"][1] < 0  # its sign is reported as it is: argmax below chance here
    assert verdict(c5) == "passes" and verdict(found["dense probe"]) == "not measured"
    write_regime(tmp_path / "five", 5, ordered)
    assert verdict(regime_contrasts(str(tmp_path / "five"))["correspondence C5"]).startswith("pilot (n = 5): both")
    write_regime(tmp_path / "level", 10, {"geometric_oracle": 10.0, "densecl": 10.0, "random_positives": 8.0})
    assert verdict(regime_contrasts(str(tmp_path / "level"))["dense retrieval"]) == "fails"


def test_only_finished_pretraining_runs_count_in_the_fit_table(tmp_path):
    from transfer.readout.controls import dense_fit
    write_regime(tmp_path / "r", 3, {"densecl": 5.0})
    (tmp_path / "r" / "pretrain_densecl_seed2" / "backbone.pth").unlink()  # still running
    fit, = dense_fit(str(tmp_path / "r"))
    assert fit["n"] == 2 and fit["loss_dense"] == (3.0, 0.0) and fit["iteration"] == 2


def test_the_curve_writes_one_table_and_a_figure_per_measured_readout(tmp_path):
    write_regime(tmp_path / "i60", 10, {"geometric_oracle": 10.0, "densecl": 10.0, "random_positives": 10.0})
    write_regime(tmp_path / "i240", 5, {"geometric_oracle": 12.0, "densecl": 10.0, "random_positives": 9.0})
    written = write_curve([str(tmp_path / "i60"), str(tmp_path / "i240")], ["i60", "i240"], [60, 240],
                          str(tmp_path / "curve"))
    assert sorted(p.rsplit("/", 1)[1] for p in written) == [
        "curve.md", "curve_correspondence_C5.png", "curve_dense_retrieval.png"]
    table = (tmp_path / "curve.md").read_text().split("\n\n")[0].splitlines()
    assert len(table) == 2 + 2 * 2  # two regimes x two measured readouts
    assert table[2].startswith("| i60 | 60 | correspondence C5 | ") and table[2].endswith("| fails |")
    assert all(open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n" for p in written[1:])
    text = (tmp_path / "curve.md").read_text()
    assert "| i240 | geometric_oracle | 5 | 2 | 10.000 ± 0.000 | 0.200 ± 0.000 | 0.500 ± 0.000 |" in text


def test_levers_at_one_length_are_drawn_side_by_side_not_as_a_curve(tmp_path):
    """Two regimes of the same length (a lever against its base) were sorted as (iterations, dict) pairs: a
    TypeError after the table was written. They are drawn by regime."""
    write_regime(tmp_path / "base", 10, {"geometric_oracle": 10.0, "densecl": 10.0, "random_positives": 10.0})
    write_regime(tmp_path / "lever", 10, {"geometric_oracle": 12.0, "densecl": 10.0, "random_positives": 9.0})
    written = write_curve([str(tmp_path / "base"), str(tmp_path / "lever")], ["base", "lever"], [60, 60],
                          str(tmp_path / "levers"))
    assert len(written) == 3 and all(open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n" for p in written[1:])
    assert "| lever | 60 | correspondence C5 | " in (tmp_path / "levers.md").read_text()


def test_moco_v2_beside_the_controls_gives_what_the_dense_loss_adds_in_a_table_of_its_own(tmp_path):
    write_regime(tmp_path / "plain", 10, {"geometric_oracle": 10.0, "densecl": 10.0, "random_positives": 10.0})
    write_regime(tmp_path / "moco", 10, {"geometric_oracle": 13.0, "densecl": 12.0, "random_positives": 11.0,
                                         "mocov2": 10.0})
    found = regime_contrasts(str(tmp_path / "moco"))["dense retrieval"]
    assert found["argmax - MoCo-v2"]["mean"] == pytest.approx(2.0, abs=0.2)
    assert found["oracle - MoCo-v2"]["ci95"][0] > 0
    assert regime_contrasts(str(tmp_path / "plain"))["dense retrieval"]["argmax - MoCo-v2"] is None
    write_curve([str(tmp_path / "plain")], ["plain"], [60], str(tmp_path / "without"))
    assert "MoCo-v2" not in (tmp_path / "without.md").read_text()
    write_curve([str(tmp_path / "plain"), str(tmp_path / "moco")], ["plain", "moco"], [60, 240],
                str(tmp_path / "with"))
    table = (tmp_path / "with.md").read_text()
    assert "| regime | iterations | readout | argmax - MoCo-v2 | oracle - MoCo-v2 |" in table
    assert "| moco | 240 | dense retrieval | +2.0" in table and "| plain | 60 | dense retrieval | +" not in \
        table.split("MoCo-v2's global one")[1]
