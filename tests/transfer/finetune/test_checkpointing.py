"""Fine-tuning checkpoints: published by rename, and a resume that never loads an empty or cut-off file."""
import pytest
import torch

pytest.importorskip("detectron2")

from transfer.finetune.checkpointing import AtomicCheckpointer, ResumeError  # noqa: E402


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


@pytest.mark.parametrize("earlier", [True, False])
def test_a_full_disk_is_one_line_saying_what_stands(tmp_path, monkeypatch, earlier):
    """torch.save on a full disk raises its zip writer's RuntimeError ("unexpected pos") with the OSError as its
    context; the first checkpoint failing is as clear as a later one."""
    import errno

    from transfer.finetune.checkpointing import CheckpointWriteError
    saver = checkpointer(tmp_path)
    if earlier:
        saver.save("model_0000004", iteration=4)

    def full(obj, f):
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(CheckpointWriteError) as error:
        saver.save("model_0000009", iteration=9)
    message = str(error.value)
    assert "model_0000009.pth (No space left on device)" in message and "\n" not in message
    assert ("the last complete checkpoint, model_0000004.pth, stands" if earlier
            else "no checkpoint was written yet") in message
    assert "continue with the same command, --resume" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == (["last_checkpoint", "model_0000004.pth"] if earlier else [])
    monkeypatch.setattr(torch, "save", lambda obj, f: (_ for _ in ()).throw(RuntimeError("a bug, not the disk")))
    with pytest.raises(RuntimeError, match="a bug"):
        saver.save("model_0000010", iteration=10)
