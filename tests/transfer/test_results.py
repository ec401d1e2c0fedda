"""transfer/results.py and tools/collect_results.py --baseline: paired comparisons against a hand computation."""
import json
import os
import subprocess
import sys

import pytest

from transfer.results import ResultsError, compare, load_runs, summarise, to_markdown, write_final_results

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOLS = os.path.join(ROOT, "tools")
PYTHON = sys.executable


def write_model(root, name, aps, seeds=None):
    for seed, ap in zip(seeds or range(len(aps)), aps):
        write_final_results(str(root / name / f"seed_{seed}"), {"bbox": {"AP": ap, "AP50": ap + 20, "AP75": ap - 5}},
                            seed, weights="", config="")


def test_paired_differences_by_hand(tmp_path):
    write_model(tmp_path, "random", [10.0, 12.0, 14.0])
    write_model(tmp_path, "houghcl", [20.0, 21.0])           # seeds 0, 1
    write_model(tmp_path, "densecl", [11.0, 11.0, 15.0])
    write_model(tmp_path, "late", [30.0], seeds=[7])        # no seed in common with the baseline
    rows = summarise([str(tmp_path / n) for n in ("random", "houghcl", "densecl", "late")])
    by_model = {(c["model"], c["metric"]): c for c in compare(rows, "random")}
    # houghcl - random on seeds 0, 1: differences 10 and 9; mean 9.5, sd 0.70711; t(0.975, 1) = 12.7062.
    c = by_model[("houghcl", "bbox/AP")]
    assert c["seeds"] == [0, 1] and c["differences"] == [10.0, 9.0] and c["n"] == 2
    assert c["mean"] == pytest.approx(9.5)
    assert c["ci95"] == pytest.approx((9.5 - 12.7062 * 0.70711 / 2 ** 0.5, 9.5 + 12.7062 * 0.70711 / 2 ** 0.5),
                                      abs=1e-3)
    assert c["verdict"] == "better"
    # densecl - random: differences 1, -1, 1; mean 1/3, sd 1.1547; t(0.975, 2) = 4.3027: the CI holds zero.
    c = by_model[("densecl", "bbox/AP")]
    half = 4.3027 * 1.1547 / 3 ** 0.5
    assert c["ci95"] == pytest.approx((1 / 3 - half, 1 / 3 + half), abs=1e-3)
    assert c["verdict"] == "not distinguishable at 95%"
    # The smallest difference three seeds at this spread would detect: (t(0.975, 2) + t(0.8, 2)) sd / sqrt(3),
    # t(0.8, 2) = 1.0607 (tables).
    assert c["detectable"] == pytest.approx((4.3027 + 1.0607) * 1.1547 / 3 ** 0.5, abs=1e-3)
    assert not any(model == "late" for model, _ in by_model)
    # One run shows no spread: the mean alone.
    assert "| late | 1 | 7 | 30.00 | 50.00 | 25.00 |" in to_markdown(rows)


def test_single_seed_has_no_ci_and_worse_is_said(tmp_path):
    write_model(tmp_path, "base", [10.0, 12.0, 14.0])
    write_model(tmp_path, "worse", [5.0, 6.0, 8.0])
    write_model(tmp_path, "one", [11.0])
    rows = summarise([str(tmp_path / n) for n in ("base", "worse", "one")])
    verdicts = {c["model"]: c for c in compare(rows, "base") if c["metric"] == "bbox/AP"}
    assert verdicts["worse"]["verdict"] == "worse"
    assert verdicts["one"]["ci95"] is None and verdicts["one"]["n"] == 1
    with pytest.raises(ValueError, match="--baseline nope: no such model"):
        compare(rows, "nope")


def test_seed_is_read_from_the_file(tmp_path):
    write_final_results(str(tmp_path / "run"), {"bbox": {"AP": 1.0}}, 1234, weights="", config="")
    assert list(load_runs(str(tmp_path / "run"))) == [1234]


def test_collect_results_baseline_writes_md_csv_json(tmp_path):
    write_model(tmp_path, "random", [10.0, 12.0, 14.0])
    write_model(tmp_path, "houghcl", [20.0, 21.0, 25.0])
    result = subprocess.run([PYTHON, f"{TOOLS}/collect_results.py", str(tmp_path / "random"), str(tmp_path / "houghcl"),
                             "--baseline", "random", "--out", str(tmp_path / "t")], capture_output=True, text=True,
                            cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    md = (tmp_path / "t.md").read_text()
    # differences 10, 9, 11: mean 10, sd 1, half width 4.3027 / sqrt(3) = 2.484; the smallest difference
    # detectable with 80% power: (4.3027 + 1.0607) / sqrt(3) = 3.10
    row = ("| houghcl | random | bbox/AP | 3 | +10.00 | [+7.52, +12.48] | better | 3.10 | "
           "0: +10.00, 1: +9.00, 2: +11.00 |")
    assert row in md
    data = json.loads((tmp_path / "t.json").read_text())
    assert data["comparisons"][0]["verdict"] == "better" and data["models"][0]["seeds"] == [0, 1, 2]
    assert "ci95 low" in (tmp_path / "t.csv").read_text()
    # Two baselines: the second is compared with the first, never the reverse, and each model with both.
    write_model(tmp_path, "densecl", [15.0, 15.0, 16.0])
    result = subprocess.run([PYTHON, f"{TOOLS}/collect_results.py", str(tmp_path / "random"), str(tmp_path / "houghcl"),
                             str(tmp_path / "densecl"), "--baseline", "random", "--baseline", "densecl", "--out",
                             str(tmp_path / "t2")], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    pairs = {(c["model"], c["baseline"]) for c in json.loads((tmp_path / "t2.json").read_text())["comparisons"]}
    assert pairs == {("houghcl", "random"), ("densecl", "random"), ("houghcl", "densecl")}


def test_runs_evaluated_differently_are_not_paired(tmp_path):
    # The same numbers, but one model scored with VOC07 11-point AP on one test set, the other with the area AP on
    # another: a difference between them would mean nothing.
    for name, metric, source in (("a", "VOC2007 11-point", "/data/VOC2007"), ("b", "VOC area AP", "/data/trees")):
        for seed in (0, 1):
            write_final_results(str(tmp_path / name / f"seed_{seed}"), {"bbox": {"AP": 1.0 + seed}}, seed, "", "",
                                evaluation=[{"metric": metric, "source": source, "split": "test"}])
    rows = summarise([str(tmp_path / "a"), str(tmp_path / "b")])
    with pytest.raises(ResultsError, match="b and a were not evaluated alike"):
        compare(rows, "a")
    result = subprocess.run([PYTHON, os.path.join(TOOLS, "collect_results.py"), str(tmp_path / "a"),
                             str(tmp_path / "b"), "--baseline", "a"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "not evaluated alike" in result.stderr and "better" not in result.stdout
    # Seeds of one model evaluated differently are named too.
    write_final_results(str(tmp_path / "a" / "seed_2"), {"bbox": {"AP": 3.0}}, 2, "", "",
                        evaluation=[{"metric": "other", "source": "/x", "split": "test"}])
    with pytest.raises(ResultsError, match="its seeds were evaluated differently"):
        summarise([str(tmp_path / "a")])


def test_the_voc07_metric_follows_the_folders_own_name(tmp_path):
    from transfer.data.datasets import voc_year
    assert voc_year(str(tmp_path / "VOC2007")) == 2007
    assert voc_year(str(tmp_path / "VOC2007" / "trees")) == 2012  # kept under a VOC2007 folder: not VOC2007
    assert voc_year(str(tmp_path / "data" / "VOC2012")) == 2012 and voc_year(str(tmp_path / "VOC2007x")) == 2012


def test_models_without_a_shared_seed_are_named_not_silently_dropped(tmp_path):
    write_model(tmp_path, "random", [10.0, 12.0])
    write_model(tmp_path, "late", [30.0], seeds=[7])
    result = subprocess.run([PYTHON, os.path.join(TOOLS, "collect_results.py"), str(tmp_path / "random"),
                             str(tmp_path / "late"), "--baseline", "random"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0
    assert "late shares no seed with random (seeds [7] against [0, 1]): not compared." in result.stdout


def test_semantic_segmentation_results_are_tabled_and_paired_by_seed(tmp_path):
    """final_results.json of a segmentation run, as Detectron2's SemSegEvaluator returns it for one test set
    (per-class IoU and accuracy included): the table shows mIoU, mACC and pACC, paired by seed."""
    for name, mious in (("random", [40.0, 44.0, 41.0]), ("houghcl", [50.0, 55.0, 49.0])):
        for seed, miou in enumerate(mious):
            results = {"nuclei_test": {"sem_seg": {"mIoU": miou, "fwIoU": miou + 10, "IoU-nucleus": miou - 20,
                                                   "mACC": miou + 5, "pACC": miou + 30, "ACC-nucleus": 1.0}}}
            write_final_results(str(tmp_path / name / f"seed_{seed}"), results, seed, weights="", config="")
    rows = summarise([str(tmp_path / "random"), str(tmp_path / "houghcl")])
    assert [k for k in rows[0] if "/" in k] == ["sem_seg/mIoU", "sem_seg/mACC", "sem_seg/pACC"]
    assert rows[1]["sem_seg/mIoU"][0] == pytest.approx(154 / 3)
    miou = {c["metric"]: c for c in compare(rows, "random")}["sem_seg/mIoU"]
    assert miou["differences"] == [10.0, 11.0, 8.0] and miou["verdict"] == "better"
    assert "| houghcl | 3 | 0,1,2 | 51.33 ± 3.21 |" in to_markdown(rows)
