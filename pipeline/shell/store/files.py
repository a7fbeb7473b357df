"""File safety: write a file so that readers see the old text or the new, never half;
read one only if it is a regular file (a FIFO would block the reader for ever).

The lockfile, the journal's folder, ``index.json`` and the simulator's state all
go through here: a temp file beside the target, fsync, rename, fsync the folder.

A temp file is held with ``flock(2)`` while it is written, so a process killed
mid-write (SIGKILL, the OOM killer) leaves a temp file nobody holds:
the next write of the same target removes it (``sweep_temps``), and a temp file
another live process is still writing is left alone.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path

# ``.<name>.<8 characters>.tmp``: the names ``tempfile.mkstemp`` gave before, and the
# ones ``_create_temp`` gives now, so leftovers of either are recognised.
_TEMP_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789_"
_TEMP_TAIL = re.compile(r"\.[a-z0-9_]{8}\.tmp")
_CREATE_TRIES = 100


def write_atomic(path: Path, text: str | Iterable[str], *, durable: bool = True) -> None:
    """Replace ``path`` with ``text`` so that readers see the old or the new file, never half.

    ``text`` may come in pieces (an iterable of strings, written as they come), so a
    large file is never held whole in memory. ``durable`` also fsyncs the file and its
    folder, so the new text survives a power cut; files that can be rebuilt from the
    lockfile skip that cost. A new file gets the mode the umask allows (as ``open``
    would give it); temp files that killed writers left beside ``path`` are removed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_temps(path)
    fd, tmp = _create_temp(path)
    try:
        # The temp file stays open (and so flocked) until it has been renamed: a
        # sweeper must never take it for a dead writer's while it still has a name.
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            if isinstance(text, str):
                handle.write(text)
            else:
                handle.writelines(text)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
            tmp.replace(path)
        if durable:
            fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _create_temp(path: Path) -> tuple[int, Path]:
    """A new, flocked temp file beside ``path``: its descriptor and name.

    Created with mode 0o666 so that the kernel applies the umask, as for any new
    file (``mkstemp``'s 0o600 made the lockfile unreadable to the rest of a team).
    """
    for _ in range(_CREATE_TRIES):
        tail = "".join(secrets.choice(_TEMP_ALPHABET) for _ in range(8))
        tmp = path.with_name(f".{path.name}.{tail}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except FileExistsError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            # A sweeper may have removed the name between its creation and the flock:
            # then this descriptor is a file without a name, and another is needed.
            if tmp.stat().st_ino == os.fstat(fd).st_ino:
                return fd, tmp
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
    raise FileExistsError(errno.EEXIST, "no unused temporary file name", str(path.parent))


def sweep_temps(path: Path) -> int:
    """Remove the temp files that writes of ``path`` left behind when killed; how many.

    Only names ``write_atomic`` gives (``.<name>.<8 characters>.tmp``) are looked at,
    and only those no live process holds (a writer holds its temp file's flock until
    the rename; the kernel drops it when the writer dies). Best effort: a file that
    cannot be opened, locked or removed is left for a later sweep.
    """
    prefix = f".{path.name}"
    removed = 0
    try:
        with os.scandir(path.parent) as entries:
            names = [e.name for e in entries
                     if e.name.startswith(prefix) and _TEMP_TAIL.fullmatch(e.name, len(prefix))]
    except OSError:
        return 0
    for name in names:
        if _remove_if_unheld(path.parent / name):
            removed += 1
    return removed


def _remove_if_unheld(temp: Path) -> bool:
    try:
        fd = os.open(temp, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # Still the file that was locked (not renamed into place meanwhile and its
        # name reused): only then is the name a dead writer's.
        held = os.fstat(fd)
        if not stat.S_ISREG(held.st_mode) or temp.stat().st_ino != held.st_ino:
            return False
        temp.unlink()
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` to the descriptor ``fd`` (``os.write`` may write less)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def fsync_dir(folder: Path) -> None:
    """Make a created, renamed or removed directory entry durable (best effort)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync a directory; the rename is still atomic
    finally:
        os.close(fd)


class NotARegularFile(OSError):
    """The path names something other than a regular file (a FIFO, a device, a folder)."""

    def __init__(self, path: Path, kind: str) -> None:
        super().__init__(errno.EINVAL, f"is {kind}, not a regular file", str(path))
        self.kind = kind


def read_regular(path: Path, *, limit: int | None = None) -> bytes:
    """The bytes of the regular file at ``path``, at most ``limit + 1`` of them (so a
    caller can tell a file over ``limit``), all of them without a limit.

    The file is opened without blocking and checked before a byte is read, so a FIFO
    (whose open or read would wait for a writer for ever), a device or a socket is
    refused with ``NotARegularFile``; other failures raise their ``OSError``.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotARegularFile(path, _kind(mode))
        os.set_blocking(fd, True)
        if limit is None:
            with os.fdopen(os.dup(fd), "rb") as whole:
                return whole.read()
        chunks = []
        left = limit + 1
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 20))):
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _kind(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return kind
    return "of another kind"
