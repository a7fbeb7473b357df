"""The run guard: at most one imgspec run per manifest at a time.

("Lock" in imgspec means the lockfile; this is the *guard*.)

The guard is ``shop.run.guard`` beside ``shop.lock.json``, held with an exclusive,
non-blocking ``flock(2)``. The kernel drops a flock when its holder exits, however
it exits (including SIGKILL), so a guard left by a dead process is free by
construction and no pid-liveness check is needed. The file also holds the
holder's pid and start time as JSON, read only to write a helpful refusal.

``flock`` (not ``fcntl``/``lockf`` record locks) because flock belongs to the open
file, not the process: a second acquisition inside the same process is refused
too, and closing some unrelated descriptor of the file does not drop it.

POSIX only (``fcntl``); Windows is not supported. Over NFS it is as reliable as
the server's lock support. A child made with a bare ``fork()`` (no exec) shares
the descriptor and so keeps the guard alive until it exits as well.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from pipeline.errors import LockfileError, RunGuardHeld

_RECORD_LIMIT = 4096
_READ_RETRIES = 5  # the holder writes its record just after locking; give it a moment
_OPEN_RETRIES = 20


def guard_path(lock_path: Path) -> Path:
    """``shop.lock.json`` → ``shop.run.guard``, beside it."""
    name = lock_path.name
    for suffix in (".lock.json", ".json"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return lock_path.with_name(f"{name}.run.guard")


class RunGuard:
    """Exclusive, non-blocking claim on one manifest's run; use as a context manager."""

    def __init__(self, path: Path, *, subject: str | None = None) -> None:
        """A guard on ``path``; ``subject`` (e.g. ``shop.yaml``) names the manifest in messages."""
        self.path = path
        self.subject = subject or path.name.removesuffix(".run.guard")
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object currently holds the guard."""
        return self._fd is not None

    def __enter__(self) -> RunGuard:
        """Take the guard now, or raise ``RunGuardHeld`` naming the live holder."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path}: this RunGuard is already held (not re-entrant)")
        self._fd = self._acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Remove the pid record and release the guard."""
        self.release()

    def release(self) -> None:
        """Remove the pid record and release the guard; does nothing if not held."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            # Unlink while still holding the flock, so the name can never point at a file
            # a newer holder has locked; only our own file (same inode) is removed.
            if _same_file(fd, self.path):
                self.path.unlink()
        except OSError:
            pass  # a record left behind is harmless: the next run takes it over
        finally:
            os.close(fd)  # releases the flock

    def _acquire(self) -> int:
        for _ in range(_OPEN_RETRIES):
            try:
                # No O_TRUNC: a refused acquirer must leave the holder's record intact.
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise LockfileError(
                    f"{self.path}: cannot create the run guard ({exc.strerror}); check the "
                    "folder's permissions"
                ) from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_record(fd)
                os.close(fd)
                raise RunGuardHeld(self._held_message(holder), guard=self.path,
                                   holder_pid=_pid(holder)) from None
            except OSError as exc:
                os.close(fd)
                raise LockfileError(
                    f"{self.path}: cannot lock the run guard ({exc.strerror}); the filesystem "
                    "may not support file locks"
                ) from exc
            # The previous holder may have unlinked the file between our open and our
            # flock; then we locked an orphan and must start over on the current name.
            if not _same_file(fd, self.path):
                os.close(fd)
                continue
            try:
                _write_record(fd)
            except OSError as exc:
                os.close(fd)
                raise LockfileError(
                    f"{self.path}: cannot write the run guard ({exc.strerror}); check the "
                    "folder's permissions and free space"
                ) from exc
            return fd
        raise RunGuardHeld(f"another imgspec run keeps taking and releasing {self.path}; "
                           "wait for it to finish, then run again", guard=self.path)

    def _held_message(self, holder: dict[str, Any] | None) -> str:
        who = "pid unknown"
        if holder is not None:
            who = f"pid {holder.get('pid', '?')}"
            host = holder.get("host")
            if host and host != socket.gethostname():
                who += f" on {host}"
            if holder.get("started"):
                who += f", started {holder['started']}"
        return (f"another imgspec run ({who}) is working on {self.subject}; "
                "wait for it to finish or stop it")


def _pid(holder: dict[str, Any] | None) -> int | None:
    pid = None if holder is None else holder.get("pid")
    return pid if isinstance(pid, int) and not isinstance(pid, bool) else None


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = path.stat()
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def _write_record(fd: int) -> None:
    record = {
        "pid": os.getpid(),
        "started": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "host": socket.gethostname(),
    }
    data = (json.dumps(record, sort_keys=True) + "\n").encode("utf-8")
    # Write first, then trim: a reader never sees an empty file, at worst a mix it
    # cannot parse (and retries).
    os.pwrite(fd, data, 0)
    os.ftruncate(fd, len(data))


def _read_record(fd: int) -> dict[str, Any] | None:
    """The holder's record, or ``None`` if it is missing or unreadable."""
    for attempt in range(_READ_RETRIES):
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(os.pread(fd, _RECORD_LIMIT, 0).decode("utf-8"))
            if isinstance(data, dict):
                return data
        if attempt + 1 < _READ_RETRIES:
            time.sleep(0.01)
    return None
