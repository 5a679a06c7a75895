"""Outputs appear whole or not at all: write to a temporary file beside the target, then rename over it."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yields a temporary path in the target's folder; on success it replaces `path`, on error it is removed.

    The temporary file lives in the same folder so the final `os.replace` is a rename on one file system, which
    is atomic: a reader sees the old file or the new one, never half of one.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name keeps the extension: some drivers (GeoPackage) check it.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".part{target.suffix}", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        # mkstemp makes the file private (0600); the output gets the permissions any new file would get here.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise



def _read_umask() -> int:
    """The process's umask, read without changing it where Linux shows it (setting it to read it back races with
    other threads creating files); read once, at import, where no other thread runs yet."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def remove_if_empty(folder: Path) -> None:
    """Removes a folder a failed run made, if nothing is in it (a folder with anything in it is the user's)."""
    with contextlib.suppress(OSError):
        folder.rmdir()  # fails, as wanted, when the folder holds anything


def remove_stale_scratch(folder: Path, prefix: str) -> None:
    """Removes scratch folders `<prefix><pid>-*` of runs whose process no longer exists (killed with -9, or a
    machine that went down); those of live runs are left alone."""
    import shutil

    for scratch in folder.glob(f"{prefix}*-*"):
        pid = scratch.name[len(prefix):].split("-", 1)[0]
        if scratch.is_dir() and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(scratch, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


LOCK_NAME = ".road-extractor.lock"


@contextlib.contextmanager
def folder_lock(folder: Path, refuse) -> Iterator[None]:
    """Holds an exclusive lock on an output folder for one run; a second run into the same folder gets
    `refuse(pid)` raised at once instead of both writing the same files. The lock file goes with the lock."""
    import fcntl

    path = folder / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise refuse(holder or "unknown") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder removed the file between our open and lock: take the new one
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)
