"""What a fine-tuning run started from, beside its config: ``OUTPUT_DIR/run.json`` records the numerics mode it
runs in and the sha256 of ``MODEL.WEIGHTS``. The config alone cannot say either: the mode is a flag, and the
weights are a path whose file may be replaced. A resume continues in the run's own mode from the run's own
weights, or is refused in one line; ``final_results.json`` carries both, so that collect_results.py and
publish.py can hold a row against the weights it claims."""
import json
import os
from typing import Dict, List, Optional

from pretrain.runtime.files import atomic_write_json, sha256_of
from transfer.finetune.checkpointing import ResumeError

RECORD = "run.json"


def weights_sha256(weights: str) -> Optional[str]:
    """The sha256 of the weights file (None for random init: an empty MODEL.WEIGHTS)."""
    return sha256_of(weights) if weights and os.path.isfile(weights) else None


def read_record(output_dir: str) -> Optional[Dict]:
    path = os.path.join(output_dir, RECORD)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def changed_weights(recorded: Optional[str], weights: str, where: str) -> Optional[str]:
    """Why ``weights`` are not the weights of the run at ``where`` (None when they are, or nothing was
    recorded)."""
    now = weights_sha256(weights)
    if recorded is None and now is None:
        return None
    if recorded != now:
        return (f"MODEL.WEIGHTS {weights or '(random init)'} is not what {where} started from (sha256 "
                f"{(recorded or 'none')[:12]} then, {(now or 'none')[:12]} now): the file was replaced; use another "
                "OUTPUT_DIR for other weights, or put the original file back")
    return None


def start_or_continue(output_dir: str, numerics: str, weights: str, resume: bool) -> Dict:
    """Record a new run, or check that a resumed one continues in its own mode from its own weights."""
    record = read_record(output_dir) if resume else None
    if record is not None:
        modes: List[str] = record.get("numerics", [])
        if modes and modes[-1] != numerics:
            raise ResumeError(f"--numerics {numerics}: the run in {output_dir} ran in {modes[-1]} numerics "
                              f"({RECORD}); continue it with --numerics {modes[-1]}, or use another OUTPUT_DIR")
        why = changed_weights(record.get("weights_sha256"), weights, f"the run in {output_dir}")
        if why:
            raise ResumeError(why)
        return record
    record = {"numerics": [numerics], "weights": weights, "weights_sha256": weights_sha256(weights)}
    os.makedirs(output_dir, exist_ok=True)
    atomic_write_json(os.path.join(output_dir, RECORD), record, indent=1)
    return record
