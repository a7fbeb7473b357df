"""Finding the project's paid results on disk: its lockfiles and its output folders.

The I/O around ``pipeline.core.lock.reuse``. The index is a scan, made the first time a
plan asks for a request it does not have recorded under the instance's own key
(so a plan with nothing new never reads another file): every lockfile of the
project (a fresh clone has them from git), then the ``meta.json`` of the output
folders no lockfile entry accounts for (a pruned result whose images were kept).
A ``--simulate`` plan reads only ``--simulate`` lockfiles and output folders, and
a real plan never reads them: simulated images are not the account's.

A lockfile that cannot be read is left out (planning its own manifest reports
it); a file is counted on only when its sha256 is the recorded one.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.lock.lockfile import Lockfile
from pipeline.core.lock.reuse import PaidImage, PaidResult, ResultIndex, result_of_meta
from pipeline.core.planning.plan import PaidResults
from pipeline.errors import ImgspecError
from pipeline.shell.store.files import read_regular
from pipeline.shell.store.outputs import sha256_file

LOCK_SUFFIX = ".lock.json"
SIMULATE_LOCK_SUFFIX = ".simulate.lock.json"
SIMULATE_OUTPUTS_SUFFIX = ".simulate"
# Folders no lockfile lives in: tools' and version control's, and where images go.
_SKIPPED = frozenset({"node_modules", "__pycache__", "outputs"})


@dataclass(frozen=True)
class Where:
    """Where one manifest's things are, as the scan needs them (absolute paths), and
    the name endings of its side's files: ``lock_suffix`` (``.lock.json``, or
    ``.simulate.lock.json`` for ``--simulate``) and ``outputs_suffix`` (``""`` or
    ``.simulate``), as the run's context names them."""

    root: Path  # the project
    manifest: Path
    lockfile: Path
    outputs: Path
    lock_suffix: str
    outputs_suffix: str


def project_results(where: Where, lock: Lockfile, *,
                    read_lock: Callable[[Path], Lockfile]) -> PaidResults:
    """The paid results of the project ``where`` names, read when first asked.

    ``lock`` is the manifest's own lockfile as the plan holds it (its journal folded
    in); ``read_lock`` reads another lockfile of the project the same way.
    """
    scan = _Scan(where, lock, read_lock=read_lock)
    return PaidResults(scan.candidates, scan.intact, scan.empty)


def _lock_side(name: str) -> str | None:
    """The side a lockfile's name puts it on (its suffix); None for no lockfile."""
    if name.endswith(SIMULATE_LOCK_SUFFIX):
        return SIMULATE_LOCK_SUFFIX
    return LOCK_SUFFIX if name.endswith(LOCK_SUFFIX) else None


def _outputs_side(name: str) -> str:
    """The side an ``outputs/`` folder's name puts it on (its suffix)."""
    return SIMULATE_OUTPUTS_SUFFIX if name.endswith(SIMULATE_OUTPUTS_SUFFIX) else ""


class _Scan:
    def __init__(self, where: Where, lock: Lockfile, *,
                 read_lock: Callable[[Path], Lockfile]) -> None:
        self.paths = where
        self.lock = lock
        self.read_lock = read_lock
        self.root = where.root
        self._prefix = os.path.join(str(self.root), "")  # noqa: PTH118
        self._index: ResultIndex | None = None
        self._hashes: dict[str, str | None] = {}

    def candidates(self, content: str) -> tuple[PaidResult, ...]:
        if self._index is None:
            self._index = self._build()
        return self._index.candidates(content)

    def empty(self) -> bool:
        if self._index is None:
            self._index = self._build()
        return not len(self._index)

    def intact(self, image: PaidImage) -> bool:
        """The image's file is a regular file of the recorded size and sha256."""
        if image.file is None:
            return False
        if image.file not in self._hashes:
            self._hashes[image.file] = _digest(image.file, image.output.bytes)
        return self._hashes[image.file] == image.output.sha256

    def _build(self) -> ResultIndex:
        index = ResultIndex()
        own = self.paths.lockfile
        index.add_entries(self.lock.entries.values(), label="",
                          locate=self._locator(own.parent))
        for path in self._lockfiles():
            if path == own:
                continue
            try:
                other = self.read_lock(path)
            except (ImgspecError, OSError):
                continue
            label = f"{other.manifest or path.name}: "
            index.add_entries(other.entries.values(), label=label,
                              locate=self._locator(path.parent))
        known = {os.path.dirname(image.file)  # noqa: PTH120
                 for result in index.results() for image in result.images
                 if image.file is not None}
        for folder in self._output_folders():
            for instance in _instance_folders(folder):
                if instance in known:
                    continue
                meta = _read_meta(instance)
                if meta is None:
                    continue
                result = result_of_meta(meta, instance, label=self._meta_label(meta))
                if result is not None:
                    index.add(result)
        return index

    def _meta_label(self, meta: dict[str, object]) -> str:
        manifest = meta.get("manifest")
        own = os.path.relpath(self.paths.manifest, self.root)
        return "" if not isinstance(manifest, str) or manifest == own else f"{manifest}: "

    def _locator(self, base: Path) -> _Locate:
        return _Locate(str(base), self._prefix)

    def _lockfiles(self) -> Iterator[Path]:
        """The project's lockfiles of this kind (real or ``--simulate``)."""
        for folder, dirs, files in os.walk(self.root):
            dirs[:] = [d for d in dirs if not d.startswith(".") and d not in _SKIPPED]
            for name in files:
                if _lock_side(name) == self.paths.lock_suffix:
                    yield Path(folder) / name

    def _output_folders(self) -> list[str]:
        """``outputs/<name>`` folders of this kind, and the manifest's own."""
        found = [str(self.paths.outputs)]
        top = self.root / "outputs"
        try:
            names = sorted(os.listdir(top))  # noqa: PTH208
        except OSError:
            names = []
        for name in names:
            if _outputs_side(name) == self.paths.outputs_suffix:
                full = str(top / name)
                if full not in found:
                    found.append(full)
        return found


class _Locate:
    """A stored output path as a file of the project, or None when it is outside it."""

    def __init__(self, base: str, prefix: str) -> None:
        self.base = base
        self.prefix = prefix

    def __call__(self, stored: str) -> str | None:
        if not stored or "\\" in stored or "\0" in stored or os.path.isabs(stored):  # noqa: PTH117
            return None
        full = os.path.normpath(os.path.join(self.base, stored))  # noqa: PTH118
        return full if full.startswith(self.prefix) else None


def _instance_folders(folder: str) -> Iterator[str]:
    """``<folder>/<job>/<instance>`` folders (two levels, no symlinks followed)."""
    for job in _subfolders(folder):
        yield from _subfolders(job)


def _subfolders(folder: str) -> list[str]:
    try:
        with os.scandir(folder) as found:
            return [e.path for e in found
                    if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def _read_meta(folder: str) -> dict[str, object] | None:
    try:
        data = json.loads(read_regular(Path(folder, "meta.json")))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _digest(path: str, size: int) -> str | None:
    """The sha256 of a regular file of ``size`` bytes (no symlink followed), else None."""
    try:
        info = os.lstat(path)
        if not stat.S_ISREG(info.st_mode) or info.st_size != size:
            return None
        return sha256_file(Path(path))
    except OSError:
        return None
