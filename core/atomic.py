"""Outputs appear whole or not at all: write to a temporary file beside the target, then rename over it."""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from core.errors import OutputError


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yields a temporary path in the target's folder; on success it replaces `path`, on error it is removed.

    The temporary file lives in the same folder so the final `os.replace` is a rename on one file system, which
    is atomic: a reader sees the old file or the new one, never half of one.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # The temporary name keeps the extension: some drivers (GeoPackage) check it.
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".part{target.suffix}",
                                        dir=target.parent)
    except OSError as exc:
        raise OutputError(f"cannot write {target} ({exc.strerror}); choose a folder you can write to") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        # mkstemp makes the file private (0600); the output gets the permissions any new file would get here.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, target)
    except Exception as exc:
        refused = storage_refused(exc, target.parent, [tmp])
        tmp.unlink(missing_ok=True)
        if refused:
            raise OutputError(f"could not write {target}: {refused}") from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_output_file(path: str | os.PathLike[str], overwrite: bool, allow: str = "--overwrite") -> Path:
    """Refuses, before any work, an output file that may not or cannot be written: one that exists (unless
    `overwrite`; `allow` names how the user allows it), a folder of that name (the final rename would fail after
    the work, `IsADirectoryError`), or a missing parent folder. Returns the path."""
    target = Path(path)
    if target.is_dir():
        raise OutputError(f"{target} is a folder; give a file name for the output")
    if target.exists() and not overwrite:
        raise OutputError(f"{target} already exists; allow overwriting ({allow}) or choose another file")
    folder = target.parent if str(target.parent) else Path(".")
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder} is a file, not a folder; give a path in a folder for the output")
    return target


# What the C libraries say when the file system refuses a write; GDAL and SQLite pass it on as text, if at all.
_REFUSAL_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
_REFUSAL_TEXTS = ("no space left", "file too large", "disk quota", "database or disk is full")
LOW_SPACE_BYTES = 32 * 2**20


def storage_refused(exc: BaseException, folder: Path, files: Sequence[Path] = ()) -> str | None:
    """Why a failed write failed, when the file system refused it: a full disk, a quota, or a file size limit.
    GDAL and SQLite often report only "Write failed" or "Failed to commit transaction", so the folder's free space
    and the process's file size limit are looked at too. None when nothing points at the storage."""
    chain, seen = [], exc
    while seen is not None and len(chain) < 8:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    text = " ".join(str(e).lower() for e in chain)
    elsewhere = "choose another output folder (--out; the output field in QGIS)"
    if any(getattr(e, "errno", None) == errno.EFBIG for e in chain) or "file too large" in text \
            or _at_size_limit(files):
        return f"a file reached this process's file size limit (ulimit -f); raise the limit or {elsewhere}"
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    if any(getattr(e, "errno", None) in _REFUSAL_ERRNOS for e in chain) or any(t in text for t in _REFUSAL_TEXTS) \
            or (free is not None and free < LOW_SPACE_BYTES):
        left = f" ({free / 2**20:.0f} MiB free)" if free is not None else ""
        return f"the disk holding {folder} is full{left}; free some space there or {elsewhere}"
    return None


def _at_size_limit(files: Sequence[Path]) -> bool:
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit == resource.RLIM_INFINITY:
        return False
    sizes = []
    for path in files:
        with contextlib.suppress(OSError):
            sizes += [f.stat().st_size for f in (path.rglob("*") if path.is_dir() else [path]) if f.is_file()]
    return any(size >= limit - 2**16 for size in sizes)  # within 64 KiB: a library writes in pages or blocks


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
