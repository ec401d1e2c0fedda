"""Reading the downloaded archives: every member written atomically (a temp file, then a rename), members that are
already there with their size skipped (a rerun is cheap and finishes what a cut-off run left), a progress bar over
the archive's bytes, and one line naming the archive when it is truncated, damaged or not the expected one."""
import errno
import os
import tarfile
import zipfile
import zlib
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from tqdm import tqdm

from pretrain.runtime.files import atomic_write, atomic_write_text


class PrepareError(ValueError):
    """An archive or a folder that cannot be used as given; the message names the file and what to do."""


def os_problem(error: OSError, root: str) -> str:
    """One line for an operating-system error met while writing under ``root``: a full disk, a read-only or
    otherwise unwritable place, a root below a file."""
    where = error.filename or root
    if error.errno == errno.ENOSPC:
        return (f"the disk of --root {root} is full (writing {where}): free space and run the same command again "
                "(the files written so far are complete and are kept)")
    if error.errno in (errno.ENOTDIR, errno.EEXIST) and not os.path.isdir(root):
        return f"--root {root}: a file is in the way of that folder ({where}); give a folder"
    return (f"--root {root}: cannot write there ({os.strerror(error.errno) if error.errno else error}: {where}); "
            "give a folder this user can write")


def find_archive(archives: Sequence[str], name: str) -> str:
    """The path among ``archives`` whose file name is ``name`` (the published name of the download)."""
    for path in archives:
        if os.path.basename(path) == name:
            if not os.path.isfile(path):
                raise PrepareError(f"{path}: no such file")
            return path
    raise PrepareError(f"{name} is needed: give the path of the downloaded file (its published name, {name})")


def safe_target(root: str, name: str) -> str:
    """``root/name`` for an archive member, refusing names that would land outside ``root``."""
    target = os.path.normpath(os.path.join(root, name))
    if os.path.isabs(name) or not target.startswith(os.path.normpath(root) + os.sep):
        raise PrepareError(f"member {name!r} would be written outside {root}: refused")
    return target


def members(archive: str) -> Iterator[Tuple[str, int, Callable[[], bytes]]]:
    """(name, size, read) of every regular file of a .tar, .tar.gz/.tgz or .zip archive, in archive order."""
    magic = b""
    try:
        with open(archive, "rb") as f:
            magic = f.read(4)
        if magic[:2] == b"PK" or zipfile.is_zipfile(archive):  # a cut-off zip has lost its directory, not its magic
            with zipfile.ZipFile(archive) as z:
                for info in z.infolist():
                    if not info.is_dir():
                        yield info.filename, info.file_size, lambda info=info: z.read(info)
            return
        with open(archive, "rb") as f:
            compressed = f.read(3)[:2] in (b"\x1f\x8b", b"BZ", b"\xfd7")
        with tarfile.open(archive, "r:*") as t:
            end = 0
            for info in t:
                end = info.offset_data + -(-info.size // 512) * 512
                if info.isfile():
                    yield info.name, info.size, lambda info=info: t.extractfile(info).read()
        # Python's tarfile takes a cut-off plain tar for a shorter one: its members and the two zero blocks that
        # end every tar must fit in the file (a compressed stream cut off raises EOFError by itself).
        if not compressed and os.path.getsize(archive) < end + 1024:
            raise EOFError(f"the archive ends inside its member data or before its end-of-archive blocks "
                           f"({os.path.getsize(archive):,} bytes, at least {end + 1024:,} needed)")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, ValueError, zlib.error) as e:
        kind = "zip" if magic[:2] == b"PK" else "tar"
        raise PrepareError(f"{archive}: a truncated or damaged {kind} archive ({e.__class__.__name__}: {e}); "
                           "download it again (the files written so far are complete and are kept)") from None


def extract(archive: str, root: str, rename: Callable[[str], Optional[str]]) -> Dict[str, int]:
    """Write the members ``rename`` maps to a path (None: skip) under ``root``; returns {path: size} of those
    members. A member already there with its size is not written again."""
    written: Dict[str, int] = {}
    with tqdm(total=os.path.getsize(archive), unit="B", unit_scale=True, desc=os.path.basename(archive),
              leave=False) as bar:
        for name, size, read in members(archive):
            relative = rename(name)
            if relative is not None:
                target = safe_target(root, relative)
                if not (os.path.isfile(target) and os.path.getsize(target) == size):
                    try:
                        data = read()
                    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error) as e:
                        raise PrepareError(f"{archive}: truncated or damaged at {name} ({e.__class__.__name__}: "
                                           f"{e}); download it again (the files written so far are complete and "
                                           "are kept)") from None
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    atomic_write(target, lambda f: f.write(data))
                written[relative] = size
            bar.update(size)
    if not written:  # a zip of another set under this name, an empty archive: it would "prepare" nothing
        raise PrepareError(f"{archive}: none of its files is one of {os.path.basename(archive)}'s: it is not that "
                           "download (another archive under its name?); download it again")
    return written


def strip(prefix: str, keep: Sequence[str] = ("",)) -> Callable[[str], Optional[str]]:
    """A ``rename`` for ``extract``: members under ``prefix`` with it removed, if they start with one of ``keep``."""
    def rename(name: str) -> Optional[str]:
        if not name.startswith(prefix):
            return None
        rest = name[len(prefix):]
        return rest if any(rest.startswith(k) for k in keep) else None
    return rename


def read_list(path: str) -> List[str]:
    with open(path) as f:
        return [line.split()[0] for line in f if line.strip()]


def archive_list(path: str, archive: str, member: str) -> List[str]:
    """``read_list`` of a list file an archive must hold (``member``, its name in the archive): missing, it is
    the archive that lacks it, named in one line."""
    if not os.path.isfile(path):
        raise PrepareError(f"{archive}: has no {member}; it is not the published archive, download it again")
    return read_list(path)


def remove_interrupted(folders: Sequence[str]) -> List[str]:
    """Delete what an interrupted extraction left under ``folders``: the temp files of ``atomic_write``
    (``.NAME.XXXXXXXX.tmp``) at any depth. Returns their paths."""
    removed = []
    for path in interrupted(folders):
        os.unlink(path)
        removed.append(path)
    return removed


def interrupted(folders: Sequence[str]) -> List[str]:
    """The temp files of writes killed before their rename, under ``folders`` at any depth."""
    found = []
    for folder in folders:
        for parent, _, names in os.walk(folder):
            found += [os.path.join(parent, n) for n in names if n.startswith(".") and n.endswith(".tmp")]
    return sorted(found)


def write_list(path: str, names: Sequence[str]) -> None:
    atomic_write_text(path, "".join(n + "\n" for n in names))


def count_problem(what: str, found: int, published: Optional[int]) -> Optional[str]:
    """The count against the published one (None: any count, e.g. a small set under a builtin name in a test)."""
    if published is not None and found != published:
        return f"{what}: {found:,} images, the published set has {published:,}"
    return None
