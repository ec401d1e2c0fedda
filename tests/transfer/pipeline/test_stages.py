"""Pipelines of tool runs: progress read from metrics files, logs per stage, finished stages skipped, failures
named with their log."""
import json
import sys

import pytest

from transfer.pipeline.stages import Stages, last_iteration


def test_last_iteration_reads_both_metrics_formats(tmp_path):
    pretrain = tmp_path / "metrics.jsonl"
    pretrain.write_text("".join(json.dumps({"iteration": i, "total_loss": 1.0}) + "\n" for i in (1, 2, 3))
                        + '{"iteration": 4, "to')  # a row being written
    assert last_iteration(str(pretrain)) == 3
    detectron = tmp_path / "metrics.json"
    detectron.write_text(json.dumps({"iteration": 19, "time": 0.5}) + "\n")
    assert last_iteration(str(detectron), offset=1) == 20
    assert last_iteration(str(tmp_path / "missing.json")) == 0


def test_stages_log_skip_and_fail(tmp_path, capsys):
    stages = Stages([1.0, 1.0, 1.0], str(tmp_path / "logs"), str(tmp_path))
    marker = tmp_path / "done.txt"
    write = [sys.executable, "-c", f"open({str(marker)!r}, 'w').write('x'); print('hello')"]
    stages.run("write a file", write, done_when=str(marker))
    logs = sorted((tmp_path / "logs").glob("*.log"))
    assert len(logs) == 1 and "hello" in logs[0].read_text()
    stages.run("print", [sys.executable, "-c", "print('two')"])
    out = capsys.readouterr().out
    assert "[1/3 00:00, ETA" in out and "[2/3" in out and "already done" not in out
    with pytest.raises(SystemExit, match="stage 3 \\(fails\\) failed with exit status 3; full log: "):
        stages.run("fails", [sys.executable, "-c", "print('why'); raise SystemExit(3)"])
    assert "why" in capsys.readouterr().err
    assert [s["title"] for s in stages.done] == ["write a file", "print", "fails"]
    again = Stages([1.0], str(tmp_path / "logs"), str(tmp_path))
    again.run("write a file", write, done_when=str(marker))  # finished before, the same inputs: skipped
    assert "already done" in capsys.readouterr().out and [s["log"] for s in again.done] == [None]


def test_an_output_without_a_record_of_finishing_is_redone_not_adopted(tmp_path, capsys):
    """A stage killed after writing its output (a converted .pkl not yet verified) has no record of finishing:
    the rerun clears what it left and runs it again."""
    out = tmp_path / "converted"
    out.mkdir()
    (out / "model.pkl").write_text("left by a killed run")
    (out / "model.pkl.json").write_text('{"verified": false}')
    command = [sys.executable, "-c", f"open({str(out / 'model.pkl')!r}, 'w').write('new')"]
    left = [str(out / "model.pkl"), str(out / "model.pkl.json")]
    Stages([1.0], str(tmp_path / "logs"), str(tmp_path)).run("convert", command, left[0], clear=left)
    said = capsys.readouterr().out
    assert "already done" not in said and "never finished: redone" in said
    assert (out / "model.pkl").read_text() == "new" and not (out / "model.pkl.json").exists()
    Stages([1.0], str(tmp_path / "logs"), str(tmp_path)).run("convert", command, str(out / "model.pkl"))
    assert "already done" in capsys.readouterr().out


def test_a_stage_reruns_when_a_config_it_reads_changes_and_clears_its_output(tmp_path, capsys):
    base, config = tmp_path / "base.yaml", tmp_path / "run.yaml"
    base.write_text("SOLVER:\n  BASE_LR: 0.1\n")
    config.write_text("_BASE_: base.yaml\n")
    out = tmp_path / "run"
    # Appends one line per run to out/runs.txt: a stale file left by an earlier run would show.
    command = [sys.executable, "-c", f"import os; os.makedirs({str(out)!r}, exist_ok=True); "
               f"open({str(out / 'runs.txt')!r}, 'a').write('run\\n')", "--config-file", str(config)]

    def run():
        Stages([1.0], str(tmp_path / "logs"), str(tmp_path)).run("train", command, str(out / "runs.txt"),
                                                                 clear=[str(out)])
        return capsys.readouterr().out

    assert "already done" not in run()
    assert "already done" in run()  # same command, same files
    base.write_text("SOLVER:\n  BASE_LR: 0.2\n")  # the _BASE_ of the config changes
    assert "its inputs changed" in run()
    assert (out / "runs.txt").read_text() == "run\n"  # the old output was cleared, not appended to
    assert "already done" in run()


def test_a_skipped_stage_keeps_the_time_it_took(tmp_path):
    marker = tmp_path / "done.txt"
    command = [sys.executable, "-c", f"import time; time.sleep(0.3); open({str(marker)!r}, 'w').write('x')"]
    first = Stages([1.0], str(tmp_path / "logs"), str(tmp_path))
    first.run("write", command, str(marker))
    again = Stages([1.0], str(tmp_path / "logs"), str(tmp_path))
    again.run("write", command, str(marker))
    assert again.done[0]["log"] is None
    assert again.done[0]["earlier_seconds"] == pytest.approx(first.done[0]["seconds"])
    assert first.done[0]["seconds"] >= 0.3


def test_a_stage_reruns_when_the_library_code_its_tool_imports_changes(tmp_path, capsys):
    # A project with two packages: the tool imports `alpha`, which imports `beta`; `gamma` is unrelated.
    for package, body in (("alpha", "from beta import core\n"), ("beta", ""), ("gamma", "")):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text(body)
        (tmp_path / package / "core.py").write_text("VALUE = 1\n")
    tool = tmp_path / "tool.py"
    tool.write_text("import sys\n\ndef main():\n    from alpha import core\n"
                    "    open(sys.argv[1], 'a').write('run\\n')\n\nmain()\n")
    marker = tmp_path / "out.txt"

    def run():
        Stages([1.0], str(tmp_path / "logs"), str(tmp_path)).run(
            "tool", [sys.executable, str(tool), str(marker)], str(marker), clear=[str(marker)])
        return capsys.readouterr().out

    assert "already done" not in run()
    (tmp_path / "gamma" / "core.py").write_text("VALUE = 2\n")
    assert "already done" in run()  # a package the tool does not import
    (tmp_path / "beta" / "core.py").write_text("VALUE = 2\n")
    assert "its inputs changed" in run()  # imported through alpha, inside a function: still seen
    assert "already done" in run()


def test_package_versions_and_kernel_variables_are_part_of_the_fingerprint(monkeypatch, tmp_path):
    from transfer.pipeline import stages
    command = [sys.executable, "-c", "pass"]
    assert "torch==" in stages.versions_line() and "numpy==" in stages.versions_line()
    before = stages.fingerprint(command, str(tmp_path))
    monkeypatch.setattr(stages, "versions_line", lambda: "torch==0.0")
    assert stages.fingerprint(command, str(tmp_path)) != before
    changed = stages.fingerprint(command, str(tmp_path))
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # other CPU kernels: other floating-point results
    assert stages.fingerprint(command, str(tmp_path)) != changed


def test_a_second_pipeline_on_one_folder_stops_before_it_touches_anything(tmp_path, capsys):
    import os
    import socket
    import subprocess

    from tests.conftest import load_tool
    out = tmp_path / "demo"
    (out / "logs").mkdir(parents=True)
    running_log = out / "logs" / "05_pretrain_houghcl__seed_0.log"
    running_log.write_text("iteration 12 of the first pipeline\n")
    holder = subprocess.Popen(["sleep", "60"])  # the first pipeline, alive
    try:
        (out / ".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": holder.pid,
                                               "started": "now", "command": "tools/demo.py"}))
        before = sorted(os.listdir(out / "logs"))
        code = load_tool("demo").main(["--out", str(out), "--numerics", "fast"])
    finally:
        holder.kill()
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and f"in use by pid {holder.pid}" in err[0]
    assert sorted(os.listdir(out / "logs")) == before
    assert running_log.read_text() == "iteration 12 of the first pipeline\n"
