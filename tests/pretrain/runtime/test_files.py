"""pretrain/runtime/files.py: a reader sees the old file or the new one, never half; torn JSON lines are skipped."""
import errno
import hashlib
import json
import shutil

import pytest

from pretrain.runtime import files
from pretrain.runtime.files import atomic_write, read_jsonl, remove_stale_temporaries, sha256_of


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "results.json"
    atomic_write(str(path), lambda f: f.write(b"old"))

    def fails(f):
        f.write(b"half")
        raise ValueError("the writer broke")

    with pytest.raises(ValueError, match="the writer broke"):
        atomic_write(str(path), fails)
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]
    assert sha256_of(str(path)) == hashlib.sha256(b"old").hexdigest()


def test_a_full_disk_is_an_enospc_error_whatever_the_writer_raises(tmp_path, monkeypatch):
    def torch_like(f):
        f.write(b"x" * 100)
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 100 vs 0")

    monkeypatch.setattr(files.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 ** 9, 10 ** 9, 10))
    with pytest.raises(OSError) as error:
        atomic_write(str(tmp_path / "ckpt.pth"), torch_like)
    assert error.value.errno == errno.ENOSPC and error.value.filename == str(tmp_path / "ckpt.pth")
    monkeypatch.setattr(files.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 ** 12, 0, 10 ** 12))
    with pytest.raises(RuntimeError, match="unexpected pos"):  # with room left, the writer's own error
        atomic_write(str(tmp_path / "ckpt.pth"), torch_like)


def test_stale_temporaries_only(tmp_path):
    for name in (".model_0000004.pth.ab12cd.tmp", ".k.pkl.x.tmp", "model_0000004.pth", ".lock", "notes.tmp"):
        (tmp_path / name).write_text("x")
    assert remove_stale_temporaries(str(tmp_path)) == [".k.pkl.x.tmp", ".model_0000004.pth.ab12cd.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "model_0000004.pth", "notes.tmp"]


def test_jsonl_rows_with_a_torn_line_and_non_objects(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"iteration": 1}) + "\n[1, 2]\n\n" + json.dumps({"iteration": 2}) + '\n{"iter')
    assert read_jsonl(str(path)) == [{"iteration": 1}, {"iteration": 2}]
    assert read_jsonl(str(tmp_path / "absent.jsonl")) == []
