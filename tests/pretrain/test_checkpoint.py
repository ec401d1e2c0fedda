"""pretrain/checkpoint.py: the newest readable checkpoint, and pruning that never leaves the folder without one."""
import os

import pytest
import torch

from pretrain.checkpoint import CheckpointError, load_latest, save_checkpoint
from pretrain.runtime.files import atomic_torch_save


def test_damaged_newest_checkpoint_falls_back_with_warning(tmp_path, caplog):
    for it in (2, 4):
        atomic_torch_save({"model": {"w": torch.full((2,), float(it))}, "iteration": it},
                          str(tmp_path / f"model_{it:07d}.pth"))
    (tmp_path / "last_checkpoint").write_text("model_0000004.pth")
    data = (tmp_path / "model_0000004.pth").read_bytes()
    (tmp_path / "model_0000004.pth").write_bytes(data[: len(data) // 2])
    with caplog.at_level("WARNING"):
        path, state = load_latest(str(tmp_path))
    assert state["iteration"] == 2 and "model_0000004.pth" in caplog.text
    (tmp_path / "model_0000002.pth").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="no readable checkpoint"):
        load_latest(str(tmp_path))


def test_keep_last_prunes_before_the_write_but_never_the_newest(tmp_path, monkeypatch):
    for it in (2, 4, 6):
        save_checkpoint(str(tmp_path), it, {"model": {}, "iteration": it})
    present = []
    real_save = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f: (present.append(sorted(os.listdir(tmp_path))), real_save(obj, f)))
    save_checkpoint(str(tmp_path), 8, {"model": {}, "iteration": 8}, keep=1)
    assert [n for n in present[0] if n.startswith("model_")] == ["model_0000006.pth"]  # during the write
    assert sorted(n for n in os.listdir(tmp_path) if not n.startswith(".")) == ["last_checkpoint",
                                                                                "model_0000008.pth"]
    save_checkpoint(str(tmp_path), 10, {"model": {}, "iteration": 10}, keep=3)
    save_checkpoint(str(tmp_path), 12, {"model": {}, "iteration": 12}, keep=3)
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith("model_")) == [
        "model_0000008.pth", "model_0000010.pth", "model_0000012.pth"]
    assert load_latest(str(tmp_path))[1]["iteration"] == 12
