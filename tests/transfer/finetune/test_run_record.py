"""OUTPUT_DIR/run.json: a resumed fine-tuning continues in its own numerics mode from its own weights."""
import json

import pytest

from transfer.finetune.checkpointing import ResumeError
from transfer.finetune.run_record import read_record, start_or_continue


def test_a_resume_in_another_numerics_mode_is_refused_naming_the_flag(tmp_path):
    weights = tmp_path / "w.pkl"
    weights.write_bytes(b"weights")
    start_or_continue(str(tmp_path / "run"), "portable", str(weights), resume=False)
    assert read_record(str(tmp_path / "run"))["numerics"] == ["portable"]
    with pytest.raises(ResumeError, match="--numerics fast: the run in .* ran in portable numerics .* continue it "
                                          "with --numerics portable"):
        start_or_continue(str(tmp_path / "run"), "fast", str(weights), resume=True)
    assert start_or_continue(str(tmp_path / "run"), "portable", str(weights), resume=True)["numerics"] == [
        "portable"]


def test_weights_replaced_at_the_same_path_are_refused_on_resume(tmp_path):
    weights = tmp_path / "w.pkl"
    weights.write_bytes(b"the weights the run started from")
    start_or_continue(str(tmp_path / "run"), "fast", str(weights), resume=False)
    weights.write_bytes(b"other weights, same path")
    with pytest.raises(ResumeError, match="is not what the run in .* started from .* the file was replaced"):
        start_or_continue(str(tmp_path / "run"), "fast", str(weights), resume=True)
    # a new run (no --resume) records the new file
    record = start_or_continue(str(tmp_path / "run"), "fast", str(weights), resume=False)
    assert json.loads((tmp_path / "run" / "run.json").read_text()) == record


def test_random_init_has_no_weights_to_compare(tmp_path):
    assert start_or_continue(str(tmp_path / "run"), "fast", "", resume=False)["weights_sha256"] is None
    assert start_or_continue(str(tmp_path / "run"), "fast", "", resume=True)["weights_sha256"] is None
    (tmp_path / "w.pkl").write_bytes(b"x")
    with pytest.raises(ResumeError, match=r"sha256 none then"):
        start_or_continue(str(tmp_path / "run"), "fast", str(tmp_path / "w.pkl"), resume=True)
