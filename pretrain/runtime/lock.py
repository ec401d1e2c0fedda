"""One job per output folder: ``OUTPUT_DIR/.lock``, held while a run writes there.

Two runs in one folder interleave their metrics and overwrite each other's checkpoints, silently. The lock
records who holds it (host, pid, SLURM job, start time, command). A lock whose process is gone (same host,
pid not alive) is stale and taken over with a warning; a requeued SLURM job takes over its own lock on any
host. Anything else is refused with the holder named.
"""
import json
import logging
import os
import socket
import sys
import time

logger = logging.getLogger(__name__)
LOCK_NAME = ".lock"


class LockError(RuntimeError):
    pass


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def this_holder() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "slurm_job": os.environ.get("SLURM_JOB_ID"),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)}


def stale_or_ours(holder: dict) -> bool:
    me = this_holder()
    if holder.get("slurm_job") and holder.get("slurm_job") == me["slurm_job"]:
        return True  # the same SLURM job, requeued (possibly on another node)
    return holder.get("host") == me["host"] and not pid_alive(int(holder.get("pid", -1)))


class OutputLock:
    """``with OutputLock(folder): ...``: raise LockError if another live job holds ``folder``."""

    def __init__(self, folder: str):
        self.folder = folder
        self.path = os.path.join(folder, LOCK_NAME)
        self.holder = None

    def acquire(self) -> None:
        os.makedirs(self.folder, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self.read()
                try:
                    young = time.time() - os.path.getmtime(self.path) < 10
                except FileNotFoundError:  # released in the meantime: try again
                    continue
                if holder is None and young:
                    raise LockError(f"{self.path}: another job is taking this OUTPUT_DIR right now") from None
                if holder is not None and not stale_or_ours(holder):
                    raise LockError(
                        f"OUTPUT_DIR {self.folder} is in use by pid {holder.get('pid')} on {holder.get('host')} "
                        f"since {holder.get('started')} ({holder.get('command')}); give this run another "
                        f"OUTPUT_DIR, or delete {self.path} if that job is gone") from None
                logger.warning("%s: taking over a stale lock (%s)", self.path, holder or "unreadable")
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
                continue
            self.holder = this_holder()
            with os.fdopen(fd, "w") as f:
                json.dump(self.holder, f)
            return
        raise LockError(f"{self.path}: could not take the lock (another job took it at the same time)")

    def read(self):
        try:
            with open(self.path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None  # half-written by a job killed at that moment: stale

    def release(self) -> None:
        if self.holder is not None and self.read() == self.holder:
            os.unlink(self.path)
        self.holder = None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()
