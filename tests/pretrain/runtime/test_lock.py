"""One job per OUTPUT_DIR: a live holder refuses a second run; a dead one's lock is taken over."""
import json
import os
import socket
import subprocess
import sys

import pytest

from pretrain.runtime.lock import LockError, OutputLock


def test_second_job_is_refused_and_the_lock_goes_with_the_job(tmp_path):
    with OutputLock(str(tmp_path)):
        with pytest.raises(LockError, match=f"is in use by pid {os.getpid()} on {socket.gethostname()}"):
            OutputLock(str(tmp_path)).acquire()
    assert not (tmp_path / ".lock").exists()
    with OutputLock(str(tmp_path)):  # free again
        pass


def test_lock_of_a_dead_process_is_taken_over(tmp_path, caplog):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    holder = {"host": socket.gethostname(), "pid": int(dead.stdout), "started": "earlier", "command": "killed"}
    (tmp_path / ".lock").write_text(json.dumps(holder))
    os.utime(tmp_path / ".lock", (0, 0))
    with caplog.at_level("WARNING"), OutputLock(str(tmp_path)) as lock:
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid() == lock.holder["pid"]
    assert "taking over a stale lock" in caplog.text
