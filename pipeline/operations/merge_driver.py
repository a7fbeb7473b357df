"""The files around a lockfile merge: git's merge driver and ``lock merge --into``.

Reads the sides, calls the pure merge (``pipeline.core.lock.merge``) and writes the
result atomically only when every entry merged: a conflict leaves every file
as it was.

Each side's upload URLs off the API's site (:class:`pipeline.core.apimart.links.LinkTrust`:
the base URL's, or any loopback simulator for a ``--simulate`` lockfile) are
dropped before the merge, each with a note: the merge keeps per image the
longest-lived URL, and a foreign one must never win by claiming to live
longest. A run would ignore it anyway, and uploading again is free.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
from collections.abc import Sequence
from pathlib import Path

from pipeline.core.apimart.links import LinkTrust, for_lockfile, host_of
from pipeline.core.expansion.expand import expand
from pipeline.core.lock.lockfile import Lockfile, lockfile_path, parse_lockfile
from pipeline.core.lock.merge import Merged, MergeNote, merge_locks
from pipeline.errors import ImgspecError, LockfileError, MergeConflict, StoreError, UsageError
from pipeline.operations.context import Header, context
from pipeline.operations.project import current_lock
from pipeline.shell.store.guard import RunGuard, guard_path
from pipeline.shell.store.lockstore import journal_path, write_lockfile
from pipeline.shell.store.manifests import load_manifest
from pipeline.shell.store.outputs import OutputFolder
from pipeline.shell.store.store import parse_output_dir


def _read_side(path: Path, *, what: str) -> Lockfile:
    """A side of a merge; an empty file (git's base of a file both branches added) is empty."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Lockfile(manifest="")
    except (OSError, UnicodeDecodeError) as exc:
        raise LockfileError(f"{path} ({what}): cannot be read ({exc})") from exc
    if not text.strip():
        return Lockfile(manifest="")
    return parse_lockfile(text, source=f"{path} ({what})")


def _on_site(sides: Sequence[Lockfile], links: LinkTrust
             ) -> tuple[list[Lockfile], list[MergeNote]]:
    """The sides without their upload URLs off the API's site, and a note for each."""
    kept: list[Lockfile] = []
    notes: list[MergeNote] = []
    for side in sides:
        foreign = {sha: upload for sha, upload in side.uploads.items()
                   if links.recorded(upload.url) is None}
        for sha, upload in sorted(foreign.items()):
            notes.append(MergeNote("upload-dropped", f"uploads[{sha[:12]}…]", "-",
                                   host_of(upload.url),
                                   "dropped an upload URL that is not the API's; the next "
                                   "run uploads the image again"))
        kept.append(dataclasses.replace(side, uploads={
            sha: upload for sha, upload in side.uploads.items() if sha not in foreign}))
    return kept, notes


def _noted(merged: Merged, dropped: Sequence[MergeNote]) -> Merged:
    return dataclasses.replace(merged, notes=(*dropped, *merged.notes)) if dropped else merged


def merge_driver(base: Path, ours: Path, theirs: Path, *, name: str | None = None,
                 base_url: str) -> Merged:
    """git's merge driver (``%O %A %B``): the merged lockfile replaces ``ours`` (``%A``).

    Upload URLs are kept only on the API's site (``base_url``; any loopback
    simulator for a ``--simulate`` lockfile).

    On a conflict ``ours`` is left untouched and git keeps both sides in its index.
    """
    shown = name or str(ours)
    try:
        sides = [_read_side(ours, what="ours"), _read_side(theirs, what="theirs")]
        sides, dropped = _on_site(sides, for_lockfile(shown, base_url))
        merged = _noted(merge_locks(sides, base=_read_side(base, what="base")), dropped)
    except MergeConflict as exc:
        raise exc.advised(
            f"{shown} keeps our side; git keeps both (`git show :2:{shown}` is ours, "
            f"`git show :3:{shown}` theirs). Decide which task to keep, edit {shown} so "
            f"that it holds that entry, then `git add {shown}`") from None
    except LockfileError as exc:
        raise LockfileError(f"{exc}\n{shown} keeps our side and git keeps both: restore "
                            f"the unreadable side from git, then `imgspec lock merge "
                            "--into` the two by hand") from exc
    write_lockfile(ours, merged.lock)
    return merged


def merge_into(into: Path, sources: Sequence[Path], *,
               base_url: str) -> Merged:
    """Fold ``sources`` (and ``into`` itself, if it exists) into ``into``.

    Upload URLs are kept only on the API's site, as in :func:`merge_driver`.

    Output paths are stored relative to their lockfile's folder, so entries from a
    lockfile in another folder are rebased onto ``into``'s: they keep naming the
    same files.
    """
    if not sources:
        raise UsageError("lock merge --into X needs lockfiles to merge into X: "
                         "imgspec lock merge --into X.lock.json A.lock.json B.lock.json")
    missing = [str(p) for p in sources if not p.is_file()]
    if missing:
        raise UsageError(f"no such lockfile: {', '.join(missing)}")
    target = Path(os.path.abspath(into))  # noqa: PTH100
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LockfileError(f"{into}: its folder cannot be created ({exc.strerror})") from exc
    # Under X's run guard: a run recording into X meanwhile would be overwritten.
    with RunGuard(guard_path(target), subject=into.name):
        if journal_path(target).exists():
            raise UsageError(f"{into} has the journal of an unfinished run "
                             f"({journal_path(target).name}): run that manifest once (it "
                             "folds the journal in), then merge")
        sides = [current_lock(target, manifest="")] if target.is_file() else []
        for path in dict.fromkeys(Path(os.path.abspath(p)) for p in sources):  # noqa: PTH100
            if path == target:
                continue
            side = current_lock(path, manifest="")
            # Paths in a store are relative to its prefix, wherever the lockfile lies.
            sides.append(side if _in_store(target, side) else
                         _rebased(side, path.parent, target.parent))
        try:
            sides, dropped = _on_site(sides, for_lockfile(target.name, base_url))
            merged = _noted(merge_locks(sides), dropped)
        except MergeConflict as exc:
            raise exc.advised(f"nothing was written; {into} and every input are unchanged. "
                              "Keep the entry you want in one input (delete it from the "
                              "others), then merge again") from None
        write_lockfile(target, merged.lock)
        return dataclasses.replace(merged, index=refresh_index(target, merged.lock))


def refresh_index(target: Path, lock: Lockfile) -> Path | str | None:
    """Rewrite the output folder's ``index.json`` from the merged lockfile, when ``target``
    is the lockfile of a manifest beside it that validates; the index written, or None.

    Every shard wrote the index of its own part; after the merge only one index can be
    right, and ``verify`` checks it against the lockfile.
    """
    manifest_path = target.parent / lock.manifest if lock.manifest else None
    if manifest_path is None or not manifest_path.is_file():
        return None
    simulate = next((flag for flag in (False, True)
                     if lockfile_path(manifest_path, simulate=flag) == target), None)
    if simulate is None:
        return None
    try:
        manifest, workspace = load_manifest(manifest_path)
        expansion = expand(manifest, workspace)
    except ImgspecError:
        return None  # the merge stands; the next run of a valid manifest writes the index
    paths = context(manifest_path, simulate=simulate, lockfile=target).locate(Header.of(manifest))
    folder = paths.output_folder()
    if isinstance(folder, OutputFolder) and not folder.root.is_dir():
        return None
    # Relative, as ``run`` writes it from a path typed in the project: an absolute path
    # would name one person's checkout in a file the team shares.
    try:
        return folder.write_index(expansion, lock.entries, os.path.relpath(manifest_path))
    except StoreError:
        return None  # a store out of reach (no credentials here): the merge stands


def _in_store(target: Path, lock: Lockfile) -> bool:
    """Whether the manifest of ``lock``, beside ``target``, keeps its outputs in a store."""
    manifest = target.parent / lock.manifest if lock.manifest else None
    if manifest is None or not manifest.is_file():
        return False
    try:
        output_dir = context(manifest).header().output_dir
        return output_dir is not None and parse_output_dir(output_dir) is not None
    except ImgspecError:
        return False


def _rebased(lock: Lockfile, source: Path, target: Path) -> Lockfile:
    if source == target:
        return lock
    entries = {}
    for key, entry in lock.entries.items():
        outputs = tuple(
            dataclasses.replace(o, path=posixpath.normpath(
                Path(os.path.relpath(source / o.path, target)).as_posix()))
            for o in entry.outputs)
        entries[key] = dataclasses.replace(entry, outputs=outputs)
    return dataclasses.replace(lock, entries=entries)
