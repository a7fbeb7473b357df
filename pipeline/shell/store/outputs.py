"""The output folder: ``<root>/<job>/<instance folder>/<i>.<ext>``, ``meta.json``, ``index.json``.

Every path is built from validated job ids and sanitised instance folders and is
checked to stay inside the root, by name and, before anything is read or written
there, by real path (``pipeline.shell.store.confine``): a symbolic link in the folder leads
nowhere outside it. Images arrive as temp files in their final folder and are
renamed into place, so an existing image is replaced, never deleted first.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from pipeline.core.expansion.instances import Expansion, Instance
from pipeline.core.lock.lockfile import LockEntry, Output
from pipeline.errors import OutputOutsideRoot
from pipeline.shell.store.confine import Confined
from pipeline.shell.store.files import read_regular, write_all, write_atomic
from pipeline.shell.store.layout import (
    EXTENSIONS,
    VerifyProblem,
    image_name,
    index_chunks,
    index_head,
    index_instances,
    index_problem,
    instance_folder,
    meta_text,
    utc_now,
)
from pipeline.shell.store.store import OutputStore

__all__ = ["EXTENSIONS", "OutputFolder", "VerifyProblem", "sha256_file", "utc_now",
           "verify_outputs"]


@dataclass(frozen=True, slots=True)
class OutputFolder:
    """The root of one manifest's outputs and the lockfile folder its paths are relative to."""

    root: Path
    base: Path  # the lockfile's folder
    _prefix: str = field(init=False, repr=False, compare=False)  # "<root>/", for confined
    _base: str = field(init=False, repr=False, compare=False)
    # The real-path checks, and the folders they have found good (for this command).
    _real: Confined = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Absolute once, here: every comparison below is between absolute paths,
        # whatever the current directory and however the manifest was named.
        object.__setattr__(self, "root", Path(os.path.abspath(self.root)))  # noqa: PTH100
        object.__setattr__(self, "base", Path(os.path.abspath(self.base)))  # noqa: PTH100
        object.__setattr__(self, "_prefix", os.path.join(str(self.root), ""))  # noqa: PTH118
        object.__setattr__(self, "_base", str(self.base))
        object.__setattr__(self, "_real", Confined(
            self.root, label="the output folder",
            advice="; `imgspec run` then writes what belongs there again"))

    def instance_dir(self, job: str, key: str) -> Path:
        """``<root>/<job>/<folder of key>``, guaranteed inside the root.

        Checked on the names, not by resolving the path (that costs a system call per
        component, per image): job ids are schema-checked slugs and instance folders
        are sanitised, so neither can hold a separator or be ``.``/``..``.
        """
        return self.root / instance_folder(job, key, root=str(self.root))

    def temp_path(self, job: str, key: str, index: int) -> Path:
        """A fresh temp file name beside the final image (same filesystem, so rename is atomic).

        Only a name: the download creates the folder along with the file, in a worker
        thread (a folder's inode can take milliseconds to allocate on a busy disk, too
        long for the event loop). The folders a run writes in were checked before it
        started (``check_folders``); one made since is a new, real folder.
        """
        return self.instance_dir(job, key) / f".{index}.{secrets.token_hex(4)}.part"

    def check_folders(self, instances: Iterable[tuple[str, str]]) -> None:
        """Refuse, before a run spends anything, job or instance folders that link outside.

        ``instances`` are (job, key) pairs: the instances the run will write. Folders
        not made yet are fine (made later, they are real folders).
        """
        for job, key in instances:
            self._real.check_folder(str(self.instance_dir(job, key)))

    def stat(self, full: str) -> os.stat_result | None:
        """The file ``full`` (inside the root) as a reader would see it; None if missing.

        ``LinkLeadsOutside`` if it, or a folder above it, is a link that leads out.
        """
        return self._real.stat(full)

    @property
    def checks(self) -> Confined:
        """The real-path checks of this folder (for the gallery's thumbnails, ``export``)."""
        return self._real

    def readable(self, stored: str) -> Path:
        """``absolute``, and refused if a link would lead the read out of the root."""
        full = self.absolute(stored)
        self._real.stat(str(full))
        return full

    def install(self, temp: Path, job: str, key: str, index: int, fmt: str, *,
                sha256: str, previous: str | None = None) -> Path:
        """Rename a verified temp file to ``<i>.<ext>``; the old image stays until replaced.

        ``previous`` is the lockfile path of the image this slot held before, removed
        only when it is another file (another format) inside the output folder. The
        rename keeps the bytes, so ``sha256`` (the download's, checked) needs no
        second look.
        """
        del sha256
        final = self.instance_dir(job, key) / image_name(index, fmt)
        temp.replace(final)
        if previous is not None:
            old = self.confined(previous)
            # Compared as files, not as strings: however the two paths were spelt
            # (relative, absolute, through a symlink), the image just renamed into
            # place is never the one removed.
            if old is not None and not _same_file(old, final):
                self._remove(old)
        return final

    def relative(self, path: PurePath) -> str:
        """A path as the lockfile stores it: relative to the lockfile's folder, POSIX style."""
        return Path(os.path.relpath(path, self.base)).as_posix()

    def confined(self, stored: str) -> str | None:
        """The file a lockfile output path names, or None when it is not inside the root.

        Lockfiles come from other people (pull requests, merges): a stored path is
        trusted only when, normalised, it names a file under the output folder. This
        is lexical (no system call), so the plan can ask it for every output.
        """
        if not stored or "\\" in stored or "\0" in stored or os.path.isabs(stored):  # noqa: PTH117
            return None
        full = os.path.normpath(os.path.join(self._base, stored))  # noqa: PTH118
        return full if full.startswith(self._prefix) else None

    def absolute(self, stored: str) -> Path:
        """The file a lockfile output path names; ``LockfileError`` if outside the root."""
        full = self.confined(stored)
        if full is None:
            raise OutputOutsideRoot(stored, self.root)
        return Path(full)

    def check_entries(self, entries: Iterable[LockEntry]) -> None:
        """Refuse a lockfile any of whose output paths lies outside the output folder."""
        for entry in entries:
            for output in entry.outputs:
                if self.confined(output.path) is None:
                    raise OutputOutsideRoot(output.path, self.root, key=entry.key)

    def remove_images(self, stored: Iterable[str]) -> None:
        """Delete images the lockfile no longer lists (left by an earlier, larger ``n``)."""
        for path in stored:
            full = self.confined(path)
            if full is not None:
                self._remove(full)

    def _remove(self, full: str) -> None:
        # The lexical check cannot see symlinks: a folder under the root that links
        # elsewhere must not turn a tidy-up into a deletion outside it.
        real = os.path.realpath(full)
        if real.startswith(os.path.join(self._real.real, "")):  # noqa: PTH118
            Path(real).unlink(missing_ok=True)

    def clean_temp_files(self, instances: Iterable[tuple[str, str]]) -> None:
        """Remove ``.part`` files an interrupted download left in the folders of
        ``instances``, the (job, key) pairs this run will write (images and meta.json).

        Only those folders: the shards of one manifest run side by side in one output
        folder, each downloading into its own instances' folders, and a shard starting
        must not take another's download in progress for a leftover. Links are not
        followed: a linked folder is not tidied (``check_folders`` refuses it).
        """
        for job, key in instances:
            for path in _folders(str(self.instance_dir(job, key)), parts=True):
                Path(path).unlink(missing_ok=True)

    def write_meta(self, inst: Instance, entry: LockEntry, manifest: str) -> None:
        """``meta.json`` beside an instance's images."""
        folder = self.instance_dir(inst.job, inst.key)
        self._real.check_folder(str(folder))
        text = meta_text(inst, entry, manifest,
                         [self.absolute(o.path).name for o in entry.outputs])
        # Not fsynced, and a fixed temp name (one writer per instance): meta.json is a
        # readable copy of what the lockfile already holds durably. A bare descriptor,
        # as for the images (see ``pipeline.shell.http.downloads.ImageSink``).
        temp = folder / ".meta.json.part"
        fd = self._real.create(str(temp))  # never through a link left at that name
        try:
            write_all(fd, text.encode())
        finally:
            os.close(fd)
        temp.replace(folder / "meta.json")

    def write_index(self, expansion: Expansion, entries: Mapping[str, LockEntry],
                    manifest: str) -> Path:
        """``index.json``: every instance of the manifest with its status and images."""
        path = self.index_path
        write_atomic(path, index_chunks(index_head(expansion, manifest),
                                        self.index_instances(expansion, entries)))
        return path

    @property
    def index_path(self) -> Path:
        """``<root>/index.json``."""
        return self.root / "index.json"

    def index_instances(self, expansion: Expansion,
                        entries: Mapping[str, LockEntry]) -> list[dict[str, Any]]:
        """The ``instances`` of ``index.json`` for these lock entries."""
        return index_instances(expansion, entries, self._index_images)

    def check_index(self, entries: Mapping[str, LockEntry]) -> VerifyProblem | None:
        """Whether ``index.json`` is there and says what the lockfile says of each entry.

        Instances the manifest gained since the last run (not in the lockfile) or lost
        (orphaned) do not make the index wrong; no expansion is needed, so this works
        on a manifest that no longer validates.
        """
        name = self.relative(self.index_path)
        self._real.stat(str(self.index_path))
        try:
            text: str | None = read_regular(self.index_path).decode("utf-8")
        except FileNotFoundError:
            text = None
        except (OSError, UnicodeDecodeError):
            return VerifyProblem("index.json", name, "changed")
        return index_problem(text, entries, self._index_images, name)

    @property
    def shown(self) -> str:
        """The folder as messages name it."""
        return str(self.root)

    def present(self, *, rehash: bool = False) -> Callable[[Output], bool]:
        """The plan's predicate: a recorded output is a regular file of the recorded size.

        Size by default: one ``stat`` per output keeps planning 100,000 instances fast,
        and catches truncated and half-written files. ``rehash`` also compares the
        sha256 (``--rehash``), catching a same-size corruption that ``verify`` reported.
        """

        def present(output: Output) -> bool:
            full = self.confined(output.path)
            if full is None:
                return False
            try:
                # An lstat (a stat for a link that stays inside the folder), once per
                # output, 100,000s of times; a link that leads out of the folder is refused.
                info = self.stat(full)
            except OSError:
                return False
            if info is None or not (stat.S_ISREG(info.st_mode) and info.st_size == output.bytes):
                return False
            return not rehash or sha256_file(Path(full)) == output.sha256

        return present

    def verify(self, entries: Iterable[LockEntry]) -> list[VerifyProblem]:
        """Re-hash every recorded output of done entries; list the missing and the changed."""
        problems = []
        for entry in entries:
            if entry.status != "done":
                continue
            for output in entry.outputs:
                path = self.readable(output.path)
                try:
                    digest = sha256_file(path)
                except FileNotFoundError:
                    problems.append(VerifyProblem(entry.key, output.path, "missing"))
                    continue
                if digest != output.sha256:
                    problems.append(VerifyProblem(entry.key, output.path, "changed"))
        return problems

    def local_file(self, stored: str) -> Path:
        """The file a stored path names (``absolute``: it is local already)."""
        return self.absolute(stored)

    def exists(self, stored: str) -> bool:
        """Whether the file a stored path names is there (a file, not a folder)."""
        full = self.confined(stored)
        return full is not None and Path(full).is_file()

    def remove_files(self, stored: list[str]) -> None:
        """Delete images, then the ``meta.json`` and folder of each instance left empty of
        images (a folder holding anything else is kept)."""
        folders = set()
        for path in stored:
            full = self.confined(path)
            if full is not None:
                self.remove_images([path])
                folders.add(Path(full).parent)
        for instance in sorted(folders):
            rest = [p for p in instance.iterdir() if p.name != "meta.json"] \
                if instance.is_dir() else None
            if rest == []:
                (instance / "meta.json").unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    instance.rmdir()

    def _index_images(self, entry: LockEntry | None) -> list[str]:
        """An entry's images as ``index.json`` lists them: relative to the output root."""
        if entry is None or entry.status != "done":
            return []
        return [Path(os.path.relpath(self.absolute(o.path), self.root)).as_posix()
                for o in entry.outputs]


def _folders(path: str, *, parts: bool = False) -> list[str]:
    """The folders in ``path`` (not links to folders), or with ``parts`` its ``.*.part``
    files; none if it cannot be listed."""
    try:
        with os.scandir(path) as found:
            if parts:
                return [e.path for e in found
                        if e.name.startswith(".") and e.name.endswith(".part")]
            return [e.path for e in found if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def _same_file(a: str, b: Path) -> bool:
    try:
        return Path(a).samefile(b)
    except OSError:  # ``a`` is gone already: nothing to remove either way
        return True


def verify_outputs(entries: Iterable[LockEntry], folder: OutputStore) -> list[VerifyProblem]:
    """Re-hash every recorded output of done entries; list the missing and the changed."""
    return folder.verify(entries)


def sha256_file(path: Path) -> str:
    """The sha256 of a file's bytes, read a megabyte at a time."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
