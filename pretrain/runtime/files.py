"""Publishing files so that a reader sees the old file or the new one, never half of one: temp file beside the
target, fsync, rename, fsync of the folder. Every file a number or a checkpoint lives in is written this way."""
import errno
import hashlib
import json
import os
import shutil
import tempfile
from typing import Any, Dict, List

import torch

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str, write) -> None:
    """Call ``write(file_object)`` on a temp file beside ``path``, fsync it, then rename it over ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException as e:
        written = os.path.getsize(tmp) if os.path.exists(tmp) else 0
        # Whether the disk is full is judged before the temp file goes (its bytes are the space that was missing),
        # or read from the OSError that torch's writer met (a RuntimeError whose context is ENOSPC).
        full = not isinstance(e, OSError) and isinstance(e, Exception) and (
            no_space_behind(e) or disk_full(folder, written))
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is None:  # name the file the error is about
            raise OSError(e.errno, e.strerror, path) from e
        if full:
            # torch's zip writer reports a full disk as RuntimeError("... unexpected pos ..."), not as OSError.
            raise OSError(errno.ENOSPC, f"No space left on device ({e.__class__.__name__}: "
                                        f"{str(e).strip().splitlines()[-1] if str(e).strip() else e!r})", path) from e
        raise


def atomic_write_text(path: str, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def atomic_write_json(path: str, obj: Any, indent: int = 2) -> None:
    """``obj`` as indented JSON with a final newline."""
    atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def no_space_behind(error: BaseException) -> bool:
    """An OSError "no space left" (or over quota) in the chain of causes and contexts of ``error``."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        error = error.__cause__ or error.__context__
    return False


def disk_full(folder: str, written: int) -> bool:
    """Whether a failed write of ``written`` bytes into ``folder`` is explained by the space left there."""
    free = shutil.disk_usage(folder).free
    return free < max(written, 1 << 20)


def remove_stale_temporaries(folder: str) -> List[str]:
    """Delete the temp files of writes killed before their rename (``.NAME.XXXXXXXX.tmp`` of ``atomic_write``);
    call it only while holding the folder (its lock), so that no live write is touched. Returns the names."""
    removed = []
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            if name.startswith(".") and name.endswith(".tmp") and os.path.isfile(os.path.join(folder, name)):
                os.unlink(os.path.join(folder, name))
                removed.append(name)
    return sorted(removed)


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_torch_save(obj: Any, path: str) -> None:
    atomic_write(path, lambda f: torch.save(obj, f))


def read_jsonl(path: str) -> List[Dict]:
    """The rows of a JSON-lines file (``metrics.jsonl``, Detectron2's ``metrics.json``, ``provenance.jsonl``);
    [] if it does not exist. A torn line (a writer killed mid-line, or one still writing) is skipped."""
    rows = []
    if os.path.exists(path):
        with open(path, "rb") as f:
            for line in f:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict):
                    rows.append(row)
    return rows
