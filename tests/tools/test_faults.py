"""Fault injection for real: kill -9, signals, damaged checkpoints and files, non-finite losses, bad input.
Each test states what may be lost: never more than the work since the last checkpoint."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from pretrain.checkpoint import load_latest
from pretrain.runtime.files import atomic_torch_save, read_jsonl, remove_stale_temporaries
from transfer.data.synthetic import write_broken_files, write_images

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOLS = os.path.join(ROOT, "tools")
PYTHON = sys.executable

TINY = os.path.join(ROOT, "configs/pretrain/tiny_r18_cpu.yaml")


def command(image_folder, out, *extra):
    return [PYTHON, os.path.join(TOOLS, "pretrain_net.py"), "--config-file", TINY, "DATA.ROOT", str(image_folder),
            "MODEL.MATCHER", "hough", "SOLVER.MAX_ITER", "8", "SOLVER.CHECKPOINT_PERIOD", "2",
            "DATALOADER.NUM_WORKERS", "0", "SEED", "7", "OUTPUT_DIR", str(out), *map(str, extra)]


def run(cmd, **kw):
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600, **kw)
    return result


def start_and_interrupt(cmd, rows, how, out):
    """Start a run and deliver ``how`` (a signal) once metrics.jsonl holds ``rows`` rows."""
    process = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = os.path.join(out, "metrics.jsonl")
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if len(read_jsonl(metrics)) >= rows:
            process.send_signal(how)
            break
        time.sleep(0.005)
    output, _ = process.communicate(timeout=300)
    return process.returncode, output


@pytest.fixture(scope="module")
def reference(image_folder, tmp_path_factory):
    """The uninterrupted run every interrupted one must reproduce."""
    out = tmp_path_factory.mktemp("reference")
    result = run(command(image_folder, out))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    by_iteration = {r["iteration"]: r["total_loss"] for r in read_jsonl(out / "metrics.jsonl")}
    shutil.rmtree(out)  # only the losses are compared; its checkpoints would hold disk for the whole module
    return by_iteration


def losses(out):
    rows = read_jsonl(os.path.join(out, "metrics.jsonl"))
    iterations = [r["iteration"] for r in rows]
    assert iterations == sorted(set(iterations)), f"an iteration logged twice: {iterations}"
    return {r["iteration"]: r["total_loss"] for r in rows}


@pytest.mark.slow
def test_kill_9_then_resume_reproduces_every_loss(image_folder, reference, tmp_path):
    out = tmp_path / "killed"
    code, output = start_and_interrupt(command(image_folder, out), 5, signal.SIGKILL, out)
    assert code == -signal.SIGKILL, output[-2000:]
    before = losses(out)
    assert 5 <= len(before) < 8
    # Whatever the kill interrupted, metrics.jsonl is still readable JSON lines.
    result = run(command(image_folder, out, "--resume"))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "resumed from" in result.stdout
    assert losses(out) == reference  # same total_loss at every iteration 1..8, each logged once


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT])
def test_preemption_signal_checkpoints_and_resumes(image_folder, reference, tmp_path, sig):
    """SLURM's signals and Ctrl-C (exit 130): a checkpoint of the last finished iteration, how to continue."""
    out = tmp_path / "preempted"
    code, output = start_and_interrupt(command(image_folder, out), 3, sig, out)
    assert code == 128 + sig, output[-2000:]
    assert "stopped by signal" in output and "continue with the same command and --resume" in output
    stopped_at = int((out / "last_checkpoint").read_text().split("_")[1].split(".")[0])
    assert stopped_at == max(losses(out))  # the checkpoint is of the last finished iteration: nothing lost
    result = run(command(image_folder, out, "--resume"))
    assert result.returncode == 0, result.stdout[-2000:]
    assert losses(out) == reference


def test_interrupted_write_leaves_previous_checkpoint_intact(tmp_path):
    path = tmp_path / "model_0000002.pth"
    atomic_torch_save({"model": {"w": torch.ones(3)}, "iteration": 2}, str(path))

    class Crash(Exception):
        pass

    def crashing_writer(f):
        f.write(b"partial bytes of a new checkpoint")
        raise Crash()

    from pretrain.runtime.files import atomic_write
    with pytest.raises(Crash):
        atomic_write(str(path), crashing_writer)
    assert torch.load(path, weights_only=True)["iteration"] == 2
    assert sorted(os.listdir(tmp_path)) == ["model_0000002.pth"]  # no temp file left behind


@pytest.mark.slow
def test_kill_9_during_checkpoint_write_never_corrupts_the_target(tmp_path):
    target = tmp_path / "model_0000004.pth"
    atomic_torch_save({"model": {"w": torch.zeros(2)}, "iteration": 4}, str(target))
    script = (
        "import sys, torch\n"
        "from pretrain.runtime.files import atomic_write\n"
        "def slow(f):\n"
        "    for _ in range(1000):\n"
        "        f.write(b'x' * 100000); f.flush()\n"
        "        print('writing', flush=True)\n"
        "atomic_write(sys.argv[1], slow)\n")
    process = subprocess.Popen([PYTHON, "-c", script, str(target)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    for _ in range(5):
        process.stdout.readline()
    process.kill()
    process.wait()
    assert torch.load(target, weights_only=True)["iteration"] == 4  # the old, complete checkpoint
    found = load_latest(str(tmp_path))
    assert found is not None and found[1]["iteration"] == 4
    # The killed write's temp file stays until the next run in the folder removes it (holding the folder's lock).
    stale = [p.name for p in tmp_path.glob(".model_0000004.pth.*.tmp")]
    assert len(stale) == 1 and remove_stale_temporaries(str(tmp_path)) == stale
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_0000004.pth"]


@pytest.mark.slow
def test_resume_from_damaged_checkpoint_runs_on(image_folder, reference, tmp_path):
    out = tmp_path / "damaged"
    result = run(command(image_folder, out, "SOLVER.MAX_ITER", 6))
    assert result.returncode == 0
    newest = out / "model_0000006.pth"
    newest.write_bytes(newest.read_bytes()[:1000])
    result = run(command(image_folder, out, "--resume"))
    assert result.returncode == 0, result.stdout[-2000:]
    assert "damaged checkpoint(s) skipped" in result.stdout and "model_0000004.pth" in result.stdout


@pytest.mark.slow
def test_broken_files_are_skipped_and_training_runs(tmp_path):
    folder = tmp_path / "data"
    write_broken_files(str(folder))
    os.chmod(folder / "good" / os.listdir(folder / "good")[0], 0o000)
    unreadable = os.getuid() != 0  # root reads any file: then the chmod'ed file still counts as good
    write_images(str(folder / "more"), count=8)
    out = tmp_path / "out"
    result = run(command(folder, out, "SOLVER.MAX_ITER", 2))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    log = result.stdout + result.stderr
    for name in ("truncated.jpg", "empty.png", "text.jpg", "x.png"):
        assert f"skipping {folder / name}" in log or name in log
    assert f"skipped {5 if unreadable else 4} of 13 files" in log
    assert len(read_jsonl(out / "metrics.jsonl")) == 2


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(image_folder, tmp_path):
    out = tmp_path / "nan"
    result = run(command(image_folder, out, "SOLVER.BASE_LR", "1e30", "SOLVER.CHECKPOINT_PERIOD", 1))
    assert result.returncode == 1, result.stdout[-2000:]
    text = result.stdout + result.stderr
    assert "non-finite total_loss at iteration" in text
    bad = int(text.split("non-finite total_loss at iteration ")[1].split()[0])
    path, state = load_latest(str(out))
    assert state["iteration"] == bad - 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_config_errors_stop_before_any_work(image_folder, tmp_path):
    for extra, key in ((["MODEL.HOUGH.SPACEE", "similarity"], "MODEL.HOUGH.SPACEE"),
                       (["SOLVER.BATCH_SIZE", "four"], "SOLVER.BATCH_SIZE")):
        out = tmp_path / key
        result = run(command(image_folder, out, *extra))
        assert result.returncode == 2 and key in result.stderr
        assert not out.exists()


def test_bad_inputs_of_convert_and_train_net(tmp_path):
    damaged = tmp_path / "ckpt.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, damaged)
    damaged.write_bytes(damaged.read_bytes()[:200])
    result = run([PYTHON, os.path.join(TOOLS, "convert.py"), str(damaged), str(tmp_path / "out.pkl")])
    assert result.returncode == 1 and "ckpt.pth" in result.stderr and not (tmp_path / "out.pkl").exists()
    result = run([PYTHON, os.path.join(TOOLS, "collect_results.py"), str(tmp_path / "nowhere")])
    assert result.returncode == 1 and "nowhere" in result.stderr
    (tmp_path / "run" / "seed_0").mkdir(parents=True)
    (tmp_path / "run" / "seed_0" / "final_results.json").write_text('{"results": {"bbox": ')
    result = run([PYTHON, os.path.join(TOOLS, "collect_results.py"), str(tmp_path / "run")])
    assert result.returncode == 1 and "final_results.json" in result.stderr


def test_metrics_with_torn_line_are_read(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"iteration": 1, "total_loss": 1.0}) + "\n" + '{"iteration": 2, "tot')
    assert read_jsonl(str(path)) == [{"iteration": 1, "total_loss": 1.0}]
