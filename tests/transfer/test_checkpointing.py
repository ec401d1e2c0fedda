"""Fine-tuning checkpoints: published by rename, and a resume that never loads an empty or cut-off file."""
import pytest
import torch

pytest.importorskip("detectron2")

from transfer.checkpointing import AtomicCheckpointer, ResumeError  # noqa: E402


def checkpointer(folder):
    torch.manual_seed(0)
    return AtomicCheckpointer(torch.nn.Linear(3, 2), str(folder))


def test_save_publishes_the_file_and_the_pointer_by_rename(tmp_path, monkeypatch):
    saver = checkpointer(tmp_path)
    saver.save("model_0000004", iteration=4)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000004.pth"
    assert torch.load(tmp_path / "model_0000004.pth", weights_only=True)["iteration"] == 4

    def killed(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # a second Ctrl-C during the write

    monkeypatch.setattr(torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        saver.save("model_0000009", iteration=9)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_0000004.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000004.pth"


@pytest.mark.parametrize("pointer", ["model_0000009.pth", "", "model_0000012.pth"])
def test_an_empty_pointer_or_checkpoint_falls_back_to_the_newest_complete_one(tmp_path, caplog, pointer):
    saver = checkpointer(tmp_path)
    saver.save("model_0000004", iteration=4)
    (tmp_path / "model_0000009.pth").write_bytes(b"")  # what a kill during a plain write leaves
    (tmp_path / "last_checkpoint").write_text(pointer)
    with caplog.at_level("WARNING"):
        assert saver.get_checkpoint_file() == str(tmp_path / "model_0000004.pth")
    assert "empty or damaged" in caplog.text
    assert saver.resume_or_load("", resume=True)["iteration"] == 4
    (tmp_path / "model_0000004.pth").write_bytes(b"PK\x03\x04 cut off")
    with pytest.raises(ResumeError, match="no complete checkpoint to resume from"):
        saver.get_checkpoint_file()
