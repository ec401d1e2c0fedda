"""tools/pretrain_net.py end to end on CPU: every matcher, exact resume, bad configs and bad images."""
import json
import math
import os
import shutil
import subprocess
import sys

import pytest
import torch
import torchvision

from pretrain.main import main
from pretrain.runtime.files import read_jsonl
from transfer.data.synthetic import write_broken_files, write_images

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOLS = os.path.join(ROOT, "tools")
PYTHON = sys.executable

TINY = os.path.join(ROOT, "configs/pretrain/tiny_r18_cpu.yaml")


def run_cli(*args, check=True):
    result = subprocess.run([PYTHON, os.path.join(TOOLS, "pretrain_net.py"), "--config-file", TINY, *map(str, args)],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.mark.slow
@pytest.mark.parametrize("matcher", ["argmax", "hough", "threshold"])
def test_cli_each_matcher(image_folder, tmp_path, matcher):
    out = tmp_path / matcher
    run_cli("DATA.ROOT", image_folder, "MODEL.MATCHER", matcher, "SOLVER.MAX_ITER", 3, "OUTPUT_DIR", out)
    rows = read_jsonl(out / "metrics.jsonl")
    assert [r["iteration"] for r in rows] == [1, 2, 3]
    for row in rows:
        for key in ("total_loss", "loss_global", "loss_dense", "lr", "lambda", "acc_argmax", "acc_hough", "time",
                    "data_time"):
            assert math.isfinite(row[key]), key
    state = torch.load(out / "backbone.pth", weights_only=True)
    missing, unexpected = torchvision.models.resnet18().load_state_dict(state, strict=False)
    assert missing == ["fc.weight", "fc.bias"] and unexpected == []
    assert (out / "config.yaml").exists() and (out / "last_checkpoint").read_text() == "model_0000003.pth"
    assert any(p.name.startswith("events") for p in (out / "tb").iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("matcher", ["hough", "random"])  # random: its draws are a function of the sample
def test_resume_reproduces_uninterrupted_run(image_folder, tmp_path, matcher):
    common = ["--config-file", TINY, "DATA.ROOT", image_folder, "SOLVER.MAX_ITER", "5",
              "SOLVER.CHECKPOINT_PERIOD", "2", "SEED", "7", "MODEL.MATCHER", matcher]
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    assert main(common + ["OUTPUT_DIR", str(full)]) == 0
    # A run that ended after its checkpoint at iteration 4 (its later rows torn/lost), then resumed.
    resumed.mkdir()
    shutil.copy(full / "model_0000004.pth", resumed)
    (resumed / "last_checkpoint").write_text("model_0000004.pth")
    rows = read_jsonl(full / "metrics.jsonl")
    with open(resumed / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows[:4])
        f.write('{"iteration": 5, "total_lo')  # a torn last line
    assert main(["--resume"] + common + ["OUTPUT_DIR", str(resumed)]) == 0
    again = read_jsonl(resumed / "metrics.jsonl")
    assert [r["iteration"] for r in again] == [1, 2, 3, 4, 5]
    assert again[4]["total_loss"] == rows[4]["total_loss"]
    assert again[4]["loss_dense"] == rows[4]["loss_dense"]
    a = torch.load(full / "backbone.pth", weights_only=True)
    b = torch.load(resumed / "backbone.pth", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_keep_last_deletes_older_checkpoints(image_folder, tmp_path):
    out = tmp_path / "keep"
    assert main(["--config-file", TINY, "DATA.ROOT", image_folder, "SOLVER.MAX_ITER", "7", "SOLVER.CHECKPOINT_PERIOD",
                 "2", "SOLVER.KEEP_LAST", "2", "OUTPUT_DIR", str(out)]) == 0
    assert sorted(p.name for p in out.glob("model_*.pth")) == ["model_0000006.pth", "model_0000007.pth"]
    assert (out / "last_checkpoint").read_text() == "model_0000007.pth"


def test_config_errors_name_the_key(image_folder, tmp_path, capsys):
    assert main(["--config-file", TINY, "MODEL.NOT_A_KEY", "1"]) == 2
    assert "MODEL.NOT_A_KEY" in capsys.readouterr().err
    assert main(["--config-file", TINY, "SOLVER.MAX_ITER", "many"]) == 2
    assert "SOLVER.MAX_ITER" in capsys.readouterr().err
    assert main(["--config-file", TINY, "MODEL.MATCHER", "nearest"]) == 2
    assert "MODEL.MATCHER" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("MODEL:\n  DEPHT: 18\n")
    assert main(["--config-file", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "DEPHT" in err
    assert main(["--config-file", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err


def test_unreadable_files_are_skipped_with_warnings(tmp_path, caplog):
    from pretrain.data.images import TwoViewDataset
    from pretrain.data.transforms import TwoViewTransform
    folder = tmp_path / "mixed"
    write_broken_files(str(folder))
    write_images(str(folder / "more"), count=3)
    with caplog.at_level("WARNING"):
        dataset = TwoViewDataset(str(folder), TwoViewTransform(64))
    assert len(dataset) == 4
    text = caplog.text
    for name in ("truncated.jpg", "empty.png", "text.jpg", "x.png"):
        assert name in text
    assert "skipped 4 of 8 files" in text


def test_no_readable_image_stops_before_work(tmp_path):
    folder = tmp_path / "broken"
    write_broken_files(str(folder))
    shutil.rmtree(folder / "good")
    result = run_cli("DATA.ROOT", folder, "OUTPUT_DIR", tmp_path / "out", check=False)
    assert result.returncode != 0
    assert "none of the 4 files is a readable image" in result.stdout + result.stderr
    assert not (tmp_path / "out" / "metrics.jsonl").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli("DATA.ROOT", empty, "OUTPUT_DIR", tmp_path / "out2", check=False)
    assert result.returncode != 0 and "no image files found" in result.stdout + result.stderr


def test_list_file_source(image_folder, tmp_path):
    from pretrain.data.images import list_images
    names = sorted(os.listdir(image_folder))[:3]
    listing = tmp_path / "list.txt"
    listing.write_text("# three images\n" + "\n".join(os.path.join(image_folder, n) for n in names) + "\n")
    assert list_images(str(listing)) == [os.path.join(image_folder, n) for n in names]
    assert len(list_images(f"{listing}{os.pathsep}{image_folder}")) == 3 + 12


def test_resume_refuses_a_changed_config(image_folder, tmp_path, capsys):
    out = tmp_path / "run"
    common = ["--config-file", TINY, "DATA.ROOT", image_folder, "SOLVER.CHECKPOINT_PERIOD", "2", "OUTPUT_DIR", str(out)]
    assert main(common + ["SOLVER.MAX_ITER", "2"]) == 0
    saved = (out / "config.yaml").read_text()
    assert main(["--resume"] + common + ["SOLVER.MAX_ITER", "3", "MODEL.MATCHER", "argmax"]) == 2
    err = capsys.readouterr().err
    assert "MODEL.MATCHER: 'hough' -> 'argmax'" in err and "--allow-config-change" in err
    assert (out / "config.yaml").read_text() == saved and (out / "last_checkpoint").read_text() == "model_0000002.pth"
    assert main(["--resume"] + common + ["SOLVER.MAX_ITER", "3"]) == 0  # a longer schedule is the same experiment
    assert (out / "last_checkpoint").read_text() == "model_0000003.pth"
    assert main(["--resume", "--allow-config-change"] + common + ["SOLVER.MAX_ITER", "4", "MODEL.TEMPERATURE",
                                                                  "0.3"]) == 0
    # a key that changes a tensor's shape: one line, before config.yaml is rewritten, so the run's own command
    # still continues it
    saved = (out / "config.yaml").read_text()
    capsys.readouterr()
    assert main(["--resume", "--allow-config-change"] + common + ["SOLVER.MAX_ITER", "5", "MODEL.QUEUE_SIZE",
                                                                  "128"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not fit the new config (queue" in err[0] and "MODEL.QUEUE_SIZE" in err[0]
    assert (out / "config.yaml").read_text() == saved
    assert main(["--resume", "--allow-config-change"] + common + ["SOLVER.MAX_ITER", "5", "MODEL.TEMPERATURE",
                                                                  "0.3"]) == 0


def test_a_new_run_in_a_finished_runs_folder_is_refused(image_folder, tmp_path, capsys):
    out = tmp_path / "run"
    common = ["--config-file", TINY, "DATA.ROOT", image_folder, "SOLVER.MAX_ITER", "2", "OUTPUT_DIR", str(out)]
    assert main(common) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != "log.txt"}
    capsys.readouterr()
    assert main(common + ["MODEL.MATCHER", "argmax", "SEED", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "holds another run (backbone.pth, metrics.jsonl" in err and "--resume" in err
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != "log.txt"}
    assert after == before  # nothing overwritten, nothing added
    assert main(["--resume"] + common) == 0  # continuing it is what --resume is for


def test_yaml_syntax_and_learning_rate_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("MODEL:\n  DEPTH: [18\n")
    assert main(["--config-file", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {bad}: not valid YAML") and "\n" not in err
    assert main(["--config-file", TINY, "SOLVER.BASE_LR", "-0.1"]) == 2
    assert "SOLVER.BASE_LR = -0.1 must be positive" in capsys.readouterr().err


def test_second_run_in_the_same_folder_is_refused(image_folder, tmp_path, capsys):
    from pretrain.runtime.lock import OutputLock
    out = tmp_path / "busy"
    with OutputLock(str(out)):  # a live job holds it (this process)
        assert main(["--config-file", TINY, "DATA.ROOT", image_folder, "OUTPUT_DIR", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"OUTPUT_DIR {out} is in use by pid {os.getpid()}" in err
    assert not (out / "metrics.jsonl").exists() and not (out / "config.yaml").exists()


def test_full_disk_is_one_line_and_keeps_the_previous_checkpoint(image_folder, tmp_path, monkeypatch, capsys):
    import tempfile

    import pretrain.runtime.files as files
    out = tmp_path / "full"
    common = ["--config-file", TINY, "DATA.ROOT", image_folder, "SOLVER.CHECKPOINT_PERIOD", "2", "OUTPUT_DIR", str(out)]
    assert main(common + ["SOLVER.MAX_ITER", "2"]) == 0
    real_mkstemp = tempfile.mkstemp

    def full_disk(dir=None, prefix=None, suffix=None):  # checkpoints land on /dev/full: ENOSPC on write
        fd, path = real_mkstemp(dir=dir, prefix=prefix, suffix=suffix)
        if not prefix.startswith(".model_"):
            return fd, path
        os.close(fd)
        os.unlink(path)
        return os.open("/dev/full", os.O_WRONLY), path

    monkeypatch.setattr(files.tempfile, "mkstemp", full_disk)
    assert main(["--resume"] + common + ["SOLVER.MAX_ITER", "4"]) == 1
    captured = capsys.readouterr()
    assert f"error: the disk of {out} is full (writing {out}/model_0000004.pth)" in captured.out
    assert "SOLVER.KEEP_LAST" in captured.out and "Traceback" not in captured.out + captured.err
    assert (out / "last_checkpoint").read_text() == "model_0000002.pth"
    assert not list(out.glob(".*.tmp")) and not (out / ".lock").exists()

    # The same full disk as torch's zip writer reports it: a RuntimeError, not an OSError.
    monkeypatch.undo()
    written = []

    def torch_writer_on_a_full_disk(obj, f):
        f.write(b"PK" * 64)
        written.append(sorted(p.name for p in out.glob("model_*.pth")))
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 128 vs 0")

    monkeypatch.setattr(files.torch, "save", torch_writer_on_a_full_disk)
    monkeypatch.setattr(files.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10 ** 9, 10 ** 9, 0))
    assert main(["--resume"] + common + ["SOLVER.MAX_ITER", "4"]) == 1
    captured = capsys.readouterr()
    assert f"is full (writing {out}/model_0000004.pth): a checkpoint needs about" in captured.out
    assert "--resume SOLVER.KEEP_LAST 1" in captured.out and "Traceback" not in captured.out + captured.err
    assert (out / "last_checkpoint").read_text() == "model_0000002.pth" and not list(out.glob(".*.tmp"))
    # The remedy the message gives works: the config check lets KEEP_LAST change, and the checkpoint that goes
    # anyway goes before the new one is written (the newest stays until then).
    monkeypatch.undo()
    real_save = torch.save
    monkeypatch.setattr(files.torch, "save", lambda obj, f: (written.append(
        sorted(p.name for p in out.glob("model_*.pth"))), real_save(obj, f))[1])
    assert main(["--resume"] + common + ["SOLVER.MAX_ITER", "6", "SOLVER.KEEP_LAST", "1"]) == 0
    assert written[-3:] == [["model_0000002.pth"], ["model_0000004.pth"], ["model_0000006.pth"]]  # last: backbone
    assert sorted(p.name for p in out.glob("model_*.pth")) == ["model_0000006.pth"]


def test_a_full_disk_at_the_first_checkpoint_is_one_line_too(image_folder, tmp_path, monkeypatch, capsys):
    """On a real full disk torch's zip writer meets ENOSPC and raises RuntimeError("unexpected pos") with the
    OSError as its context, and the space its temp file took is free again once it is deleted."""
    import errno

    import pretrain.runtime.files as files
    out = tmp_path / "first"

    def full(obj, f):
        f.write(b"PK" * 64)
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 128 vs 0")

    monkeypatch.setattr(files.torch, "save", full)
    common = ["--config-file", TINY, "DATA.ROOT", image_folder, "SOLVER.MAX_ITER", "2", "OUTPUT_DIR", str(out)]
    assert main(common) == 1
    captured = capsys.readouterr()
    assert f"is full (writing {out}/model_0000002.pth, the run's first checkpoint)" in captured.out
    assert "No checkpoint was written yet" in captured.out and "Traceback" not in captured.out + captured.err


def test_a_failed_start_blocks_nothing_a_moved_run_resumes_and_seed_minus_one_is_drawn(image_folder, tmp_path,
                                                                                       capsys):
    out = tmp_path / "run"
    common = ["--config-file", TINY, "SOLVER.MAX_ITER", "2", "SOLVER.CHECKPOINT_PERIOD", "1"]
    assert main(common + ["DATA.ROOT", str(tmp_path / "path/to/images"), "OUTPUT_DIR", str(out)]) == 1
    assert (out / "config.yaml").exists()  # the failed start's record, which must not block the corrected one
    assert main(common + ["DATA.ROOT", image_folder, "SEED", "-1", "OUTPUT_DIR", str(out)]) == 0
    printed = capsys.readouterr().out
    drawn = int(printed.split("seed ")[1].split(" ")[0])
    assert "(drawn: the config says SEED -1)" in printed and f"SEED: {drawn}" in (out / "config.yaml").read_text()
    (out / "backbone.pth").unlink()
    os.unlink(out / "model_0000002.pth")
    (out / "last_checkpoint").write_text("model_0000001.pth")
    shutil.move(out, tmp_path / "bigger")  # the remedy for a full disk: another disk, and --resume there
    assert main(["--resume"] + common + ["DATA.ROOT", image_folder, "SEED", "-1", "OUTPUT_DIR",
                                         str(tmp_path / "bigger")]) == 0
    assert f"seed {drawn} (the run's own" in capsys.readouterr().out
    assert main(common + ["SEED", "-5", "DATA.ROOT", image_folder, "OUTPUT_DIR", str(tmp_path / "x")]) == 2
    assert "SEED = -5: a seed is 0 or more, or -1 to draw one" in capsys.readouterr().err
    (tmp_path / "a_file").write_text("")
    assert main(common + ["DATA.ROOT", image_folder, "OUTPUT_DIR", str(tmp_path / "a_file" / "run")]) == 2
    err = capsys.readouterr().err
    assert f"OUTPUT_DIR {tmp_path / 'a_file' / 'run'}: cannot write there" in err and "Traceback" not in err


def test_the_data_benchmark_on_fewer_images_than_a_batch_is_one_line(tmp_path, run_tool):
    write_images(str(tmp_path / "few"), count=3)
    result = run_tool("benchmark", "data", "--images", tmp_path / "few", "--data-batch", 16, "--workers", 0)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "3 readable images, fewer than one batch of --data-batch 16" in result.stderr
