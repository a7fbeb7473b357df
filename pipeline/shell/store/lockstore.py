"""The lockfile on disk: read and written whole, and, during a run, kept by ``LockStore``.

``LockStore`` journals every change to an entry before it is acted on (one fsynced
line of ``shop.lock.journal``; the format and its folding are
``pipeline.core.lock.journal``'s) and rewrites the lockfile atomically now and then
(a checkpoint). It is the only writer of both files during a run and assumes the
caller holds the run guard (``pipeline.shell.store.guard``), so no other process
writes them.
"""


from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any

from pipeline.core.lock.journal import Recovery, fold_journal, journal_line, upload_line
from pipeline.core.lock.lockfile import (
    EntryTexts,
    LockEntry,
    Lockfile,
    Retired,
    Upload,
    lockfile_chunks,
    merge_retired,
    parse_lockfile,
)
from pipeline.core.lock.schema import (
    restore_advice,
)
from pipeline.errors import LockfileError
from pipeline.shell.store.files import (
    fsync_dir,
    read_regular,
    sweep_temps,
    write_all,
    write_atomic,
)

# A checkpoint comes at least this many times its own duration after the last one.
CHECKPOINT_SHARE = 50

_log = logging.getLogger(__name__)


def journal_path(lock_path: Path) -> Path:
    """``shop.lock.json`` → ``shop.lock.journal``, in the same folder."""
    name = lock_path.name.removesuffix(".json")
    return lock_path.with_name(f"{name}.journal")


def read_journal(journal: Path) -> str | None:
    """The journal's text for ``fold_journal``, or ``None`` if there is none.

    Undecodable bytes (a crash can cut a multi-byte character in the last line)
    are kept as lone surrogates, which ``fold_journal`` treats as a damaged line
    rather than failing on the whole file.
    """
    try:
        data = read_regular(journal)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LockfileError(f"{journal}: cannot be read ({_reason(exc)}); check its "
                            "permissions, then run again") from exc
    return data.decode("utf-8", errors="surrogateescape")


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def read_lockfile(path: Path, *, manifest: str = "") -> Lockfile:
    """The lockfile at ``path``, or an empty one if there is none yet."""
    try:
        text = read_regular(path).decode("utf-8")
    except FileNotFoundError:
        return Lockfile(manifest=manifest)
    except UnicodeDecodeError as exc:
        raise LockfileError(f"{path}: byte {exc.start} is not UTF-8 text; "
                            f"{restore_advice(str(path))}") from exc
    except OSError as exc:
        raise LockfileError(f"{path}: cannot be read ({exc.strerror or exc}); check its "
                            "permissions, then run again") from exc
    return parse_lockfile(text, source=str(path))


def write_lockfile(path: Path, lock: Lockfile, *, texts: EntryTexts | None = None) -> None:
    """Atomically write the lockfile; ``LockfileError`` if the disk refuses.

    ``texts``: the entries' texts kept from the last write (see ``EntryTexts``).
    """
    try:
        write_atomic(path, lockfile_chunks(lock, texts=texts))
    except OSError as exc:
        raise LockfileError(f"{path}: cannot be written ({exc.strerror}); "
                            "check the folder's permissions and free space") from exc


class LockStore:
    """The lockfile plus its append-only journal: the only writer of both during a run.

    One way to record a change, durable when it returns: ``commit`` (from the event
    loop) hands the disk work to a worker thread and writes every change committed
    meanwhile in the same write and fsync (group commit). ``delete`` (prune) is the
    synchronous exception. Otherwise use it from one thread. The caller must hold
    the run guard.
    """

    def __init__(
        self,
        lock_path: Path,
        lock: Lockfile,
        journal_fd: int,
        *,
        checkpoint_every: float,
        clock: Callable[[], float],
        recovered: Recovery | None = None,
    ) -> None:
        """Use ``LockStore.open``; this only assembles an already-opened store."""
        self.recovered = recovered or Recovery()  # what open() folded in from a crash
        self._lock_path = lock_path
        self._journal_path = journal_path(lock_path)
        self._manifest = lock.manifest
        self._entries: dict[str, LockEntry] = dict(lock.entries)
        self._uploads: dict[str, Upload] = dict(lock.uploads)
        self._retired: tuple[Retired, ...] = lock.retired
        self._snapshot: Lockfile | None = lock
        self._fd: int | None = journal_fd
        self._journal_size = 0
        self._dirty = False  # the journal holds changes the lockfile does not
        self._checkpoint_every = checkpoint_every
        # At least 50 times as long as the last checkpoint took: rewriting a large
        # lockfile every few seconds would otherwise be most of the run's work.
        self._checkpoint_gap = checkpoint_every
        self._texts = EntryTexts()
        self._clock = clock
        self._last_checkpoint = clock()
        # Held around every use of the journal's descriptor, so a checkpoint can never
        # truncate the journal in the middle of a commit's write in the worker thread.
        self._fd_mutex = threading.Lock()
        self._batch: tuple[list[str], asyncio.Future[None]] | None = None  # to write next
        self._writer: asyncio.Task[None] | None = None  # writes batches while there are any
        # Its own thread, so a commit never queues behind other disk work (downloads).
        self._thread: ThreadPoolExecutor | None = None

    @classmethod
    def open(
        cls,
        lock_path: Path,
        *,
        manifest: str,
        checkpoint_every: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> LockStore:
        """Open the store, first folding in a journal left behind by a crash.

        The lockfile is read (empty, naming ``manifest``, if there is none). A
        leftover journal is folded in, the lockfile rewritten atomically, and only
        then the journal removed, so a crash during recovery is itself recoverable.
        """
        journal = journal_path(lock_path)
        # The caller holds the run guard, but a write of the lockfile killed mid-way may
        # have left its temp file: the store is the lockfile's writer, so it tidies up.
        sweep_temps(lock_path)
        lock = read_lockfile(lock_path, manifest=manifest)
        text = read_journal(journal)
        recovery = Recovery()
        try:
            if text is not None:
                recovered = fold_journal(lock, text, source=str(journal))
                recovery = Recovery.between(lock, recovered)
                if (recovery.deleted or recovery.updated or recovered.uploads != lock.uploads
                        or recovered.retired != lock.retired):
                    write_lockfile(lock_path, recovered)
                    lock = recovered
                journal.unlink()
            fd = os.open(journal, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        except OSError as exc:
            raise LockfileError(f"{journal}: cannot be written ({_reason(exc)}); check the "
                                "folder's permissions and free space") from exc
        # The journal's directory entry must survive a power cut, or its lines would too.
        fsync_dir(journal.parent)
        return cls(lock_path, lock, fd, checkpoint_every=checkpoint_every, clock=clock,
                   recovered=recovery)

    @property
    def lock(self) -> Lockfile:
        """The current state: the lockfile plus everything recorded (a snapshot)."""
        if self._snapshot is None:
            self._snapshot = Lockfile(manifest=self._manifest, entries=dict(self._entries),
                                      uploads=dict(self._uploads), retired=self._retired)
        return self._snapshot

    @property
    def entries(self) -> Mapping[str, LockEntry]:
        """A read-only live view of the current entries (no copy; ``lock`` is the snapshot)."""
        return MappingProxyType(self._entries)

    @property
    def path(self) -> Path:
        """The lockfile this store writes."""
        return self._lock_path

    @property
    def uploads(self) -> Mapping[str, Upload]:
        """A read-only live view of the uploaded input images, by sha256."""
        return MappingProxyType(self._uploads)

    async def commit_upload(self, sha256: str, upload: Upload) -> None:
        """Record an uploaded input image from the event loop; durable when this returns.

        Journaled like an entry (same batch, same fsync): a submission that sends
        its URL is recorded after it, so a replay sends the same URL.
        """
        self._require_open()
        self._uploads[sha256] = upload
        await self._enqueue(upload_line(sha256, upload))

    def get(self, key: str) -> LockEntry | None:
        """The current entry for ``key``, if any."""
        return self._entries.get(key)

    async def commit(self, entry: LockEntry, *,
                     submission: Mapping[str, Any] | None = None) -> None:
        """Record ``entry`` from the event loop, without blocking it on the disk.

        Durable when this returns: the line is written and fsynced by a worker
        thread, together with every entry committed while the previous write was
        in flight (one fsync for a burst of changes, not one each). The state
        changes at once, so ``get`` and ``lock`` show the entry even while it is
        being written, and a later ``checkpoint`` or ``close`` saves it even if
        this caller is cancelled meanwhile. If the write fails, every caller of
        that batch gets the ``LockfileError``. Await ``settle`` before calling
        ``checkpoint`` from the loop, so no write is still in flight. ``submission``
        goes on the line too (see :func:`journal_line`).
        """
        self._require_open()
        self._entries[entry.key] = entry
        await self._enqueue(journal_line(entry.key, entry, submission))

    async def _enqueue(self, line: str) -> None:
        """Add ``line`` to the next batch; return once it is written and fsynced."""
        self._mark_changed()
        if self._batch is None:
            self._batch = ([], asyncio.get_running_loop().create_future())
        lines, durable = self._batch
        lines.append(line)
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_batches())
        # Shielded: a cancelled caller must not cancel the batch its neighbours wait for.
        await asyncio.shield(durable)

    async def settle(self) -> None:
        """Wait until every committed entry has been written (or has failed to be)."""
        while self._writer is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._writer)

    async def _write_batches(self) -> None:
        try:
            while self._batch is not None:
                (lines, durable), self._batch = self._batch, None
                snapshot = None
                if self._checkpoint_due():
                    snapshot = self.lock
                    self._last_checkpoint = self._clock()
                if self._thread is None:
                    self._thread = ThreadPoolExecutor(1, thread_name_prefix="imgspec-journal")
                try:
                    failed = await asyncio.get_running_loop().run_in_executor(
                        self._thread, self._write_batch, "".join(lines), snapshot)
                except Exception as exc:  # the LockfileError of the append
                    if not durable.done():
                        durable.set_exception(exc)
                        durable.exception()  # retrieved: a batch nobody awaits any more is fine
                    continue
                if not durable.done():
                    durable.set_result(None)
                if failed is not None:
                    _log.warning("checkpoint failed, changes stay in the journal: %s", failed)
                elif snapshot is not None:
                    # Still clean only if nothing was committed while the snapshot was written.
                    self._dirty = self._snapshot is not snapshot
        finally:
            self._writer = None

    def _write_batch(self, text: str, snapshot: Lockfile | None) -> LockfileError | None:
        """(In a worker thread.) Append ``text``; then checkpoint ``snapshot``, if given.

        Returns the checkpoint's error instead of raising it: the lines are already
        safe in the journal, so a failed checkpoint is only retried later.
        """
        with self._fd_mutex:
            self._append(text)
            if snapshot is None:
                return None
            try:
                self._write_snapshot(snapshot)
            except LockfileError as exc:
                return exc
            return None

    def delete(self, keys: Iterable[str]) -> None:
        """Remove the entries for ``keys`` (absent keys are ignored); durable when this returns.

        What a removed entry was charged stays in the lockfile's ``retired`` history (in
        the same journal line as the deletion): spend is history, not state.
        """
        present = sorted({key for key in keys if key in self._entries})
        if not present:
            return
        records = {key: Retired.of(self._entries[key]) for key in present
                   if self._entries[key].charged > 0}
        with self._fd_mutex:
            self._append("".join(journal_line(key, None, retired=records.get(key))
                                 for key in present))
        for key in present:
            del self._entries[key]
        self._retired = merge_retired(self._retired, tuple(records.values()))
        self._changed()

    def move(self, moves: Mapping[str, LockEntry]) -> None:
        """Replace the entries ``moves`` names (old key → the entry under its new key),
        in one durable append: the new entries, then the old keys' deletions.

        Nothing is retired: the money travels with the entry. Folding a journal cut
        after the new entries keeps both keys, so no paid entry is ever lost.
        """
        if not moves:
            return
        arriving = {entry.key for entry in moves.values()}
        lines = [journal_line(entry.key, entry) for entry in moves.values()]
        lines += [journal_line(old, None) for old in moves if old not in arriving]
        with self._fd_mutex:
            self._append("".join(lines))
        for old in moves:
            self._entries.pop(old, None)
        for entry in moves.values():
            self._entries[entry.key] = entry
        self._changed()

    def checkpoint(self) -> None:
        """Write the lockfile atomically with the current state, then empty the journal.

        The order matters: a crash after the lockfile is written but before the
        journal is emptied only means the same lines are folded again at the next
        start, which changes nothing.
        """
        self._require_open()
        self._last_checkpoint = self._clock()
        if not self._dirty:
            return
        with self._fd_mutex:
            self._write_snapshot(self.lock)
        self._dirty = False

    def _write_snapshot(self, lock: Lockfile) -> None:
        """Write ``lock`` as the lockfile, then empty the journal (hold ``_fd_mutex``)."""
        fd = self._require_open()
        started = time.monotonic()
        write_lockfile(self._lock_path, lock, texts=self._texts)
        self._checkpoint_gap = max(self._checkpoint_every,
                                   CHECKPOINT_SHARE * (time.monotonic() - started))
        try:
            os.ftruncate(fd, 0)
            os.fsync(fd)
        except OSError as exc:
            raise LockfileError(f"{self._journal_path}: cannot be emptied ({_reason(exc)}); "
                                "check the folder's permissions and free space") from exc
        self._journal_size = 0

    def close(self) -> None:
        """Final checkpoint, then close and remove the journal. Idempotent.

        If the final checkpoint fails the journal is kept (it holds the state the
        lockfile lacks) and ``LockfileError`` is raised; the next run folds it in.
        """
        fd = self._fd
        if fd is None:
            return
        try:
            self.checkpoint()
        except BaseException:
            self._release(fd)
            raise
        self._release(fd)
        try:
            self._journal_path.unlink(missing_ok=True)
        except OSError as exc:
            # The journal is empty, so leaving it behind is harmless: the next open folds nothing.
            _log.warning("could not remove %s: %s", self._journal_path, _reason(exc))
            return
        fsync_dir(self._journal_path.parent)

    def _release(self, fd: int) -> None:
        if self._thread is not None:
            self._thread.shutdown(wait=True)  # lets a write still in flight finish
            self._thread = None
        with self._fd_mutex:
            self._fd = None
            os.close(fd)

    def __enter__(self) -> LockStore:
        """The store itself; leaving the block closes it, whatever ended the block."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the store (also on KeyboardInterrupt and CancelledError)."""
        self.close()

    def _require_open(self) -> int:
        if self._fd is None:
            raise ValueError(f"{self._journal_path}: the lock store is closed")
        return self._fd

    def _append(self, text: str) -> None:
        """Write and fsync ``text``, or leave the journal as it was (hold ``_fd_mutex``)."""
        fd = self._require_open()
        data = text.encode("utf-8")
        try:
            write_all(fd, data)
            os.fsync(fd)
        except BaseException as exc:
            # A partial line (disk full, or Ctrl-C between two writes) would otherwise be
            # followed by the next record and read back as a damaged middle line.
            # If even this fails, the fold at the next start still drops a torn last line.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, self._journal_size)
            if isinstance(exc, OSError):
                raise LockfileError(
                    f"{self._journal_path}: cannot be written ({_reason(exc)}); check the "
                    "folder's permissions and free space, then run again (recorded work is kept)"
                ) from exc
            raise
        self._journal_size += len(data)

    def _mark_changed(self) -> None:
        self._snapshot = None
        self._dirty = True

    def _checkpoint_due(self) -> bool:
        return self._clock() - self._last_checkpoint >= self._checkpoint_gap

    def _changed(self) -> None:
        """After a synchronous change (``delete``): mark it, and checkpoint if one is due."""
        self._mark_changed()
        if not self._checkpoint_due():
            return
        try:
            self.checkpoint()
        except LockfileError as exc:
            self._last_checkpoint = self._clock()
            _log.warning("checkpoint failed, changes stay in the journal: %s", exc)
