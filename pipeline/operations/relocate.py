"""Moving lock entries and their files: what a run does with the plan's ``→ moved``, and
``imgspec lock mv``.

The files go first, then the lockfile, in one durable journal append
(``LockStore.move``): a run stopped between the two finds the files already where
they go, and the plan (``project.found_before_move``) counts them there. A file is
moved only when its sha256 is the one recorded; a file already at the destination
is kept if it is the same image and never overwritten otherwise (the entry then
keeps naming the file where it was). ``meta.json`` follows, saying the new key.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
from dataclasses import dataclass, replace
from pathlib import Path

from pipeline.core.lock.lockfile import Lockfile, Output
from pipeline.core.lock.moves import Moved, moved_key, relocate
from pipeline.core.manifest.moved import Move
from pipeline.errors import UsageError
from pipeline.operations.context import Context
from pipeline.operations.merge_driver import refresh_index
from pipeline.operations.project import current_lock
from pipeline.shell.store.guard import RunGuard, guard_path
from pipeline.shell.store.lockstore import LockStore
from pipeline.shell.store.objectstore import ObjectStore
from pipeline.shell.store.outputs import OutputFolder, sha256_file
from pipeline.shell.store.store import OutputStore


def apply_moves(moves: tuple[Moved, ...], store: LockStore, folder: OutputStore) -> None:
    """Move each entry's files into its new instance folder, then record the moves."""
    if not moves:
        return
    if isinstance(folder, ObjectStore):
        objects = folder
        store.move({m.source: replace(m.entry, outputs=_move_objects(m, objects))
                    for m in moves})
        return
    assert isinstance(folder, OutputFolder)
    local = folder
    store.move({m.source: replace(m.entry, outputs=_move_files(m, local)) for m in moves})


def _move_objects(moved: Moved, objects: ObjectStore) -> tuple[Output, ...]:
    """``_move_files`` in an object store: copied, confirmed, then the original removed."""
    former = {new: old for old, new in moved.files}
    outputs: list[Output] = []
    folders: set[tuple[str, str]] = set()
    for output in moved.entry.outputs:
        old = former.get(output.path)
        src = objects.confined(old) if old is not None else None
        dst = objects.confined(output.path)
        if old is None or src is None or dst is None:
            outputs.append(output)
            continue
        where = objects.move_object(src, dst, output.sha256)
        outputs.append(output if where == "new" else replace(output, path=old))
        folders.add((posixpath.dirname(src), posixpath.dirname(dst)))
    for old_dir, new_dir in folders:
        objects.move_meta(old_dir, new_dir, key=moved.target, job=moved.entry.job)
    return tuple(outputs)


def _move_files(moved: Moved, folder: OutputFolder) -> tuple[Output, ...]:
    """The moved entry's outputs, each naming where its image now is."""
    former = {new: old for old, new in moved.files}
    outputs: list[Output] = []
    folders: set[tuple[Path, Path]] = set()
    for output in moved.entry.outputs:
        old = former.get(output.path)
        if old is None:
            outputs.append(output)
            continue
        src, dst = folder.confined(old), folder.confined(output.path)
        if src is None or dst is None:
            outputs.append(output)
            continue
        where = _move_file(Path(src), Path(dst), output.sha256)
        outputs.append(output if where == "new" else replace(output, path=old))
        folders.add((Path(src).parent, Path(dst).parent))
    for old_dir, new_dir in folders:
        _move_meta(old_dir, new_dir, moved)
    return tuple(outputs)


def _move_file(src: Path, dst: Path, sha256: str) -> str:
    """Move one image if it is the recorded one: "new" where the entry should name it now,
    "old" when it stays where it was (the destination holds another image)."""
    if dst.is_file() and sha256_file(dst) == sha256:
        if src.is_file() and sha256_file(src) == sha256:
            src.unlink()
        return "new"
    if not src.is_file():
        return "new"  # gone: the plan downloads or pays for it at its new place
    if dst.exists() or sha256_file(src) != sha256:
        return "old"
    dst.parent.mkdir(parents=True, exist_ok=True)
    src.replace(dst)
    return "new"


def _move_meta(old_dir: Path, new_dir: Path, moved: Moved) -> None:
    """``meta.json`` into the new folder, naming the new key; the old folder goes if empty."""
    meta = old_dir / "meta.json"
    target = new_dir / "meta.json"
    if meta.is_file() and not target.exists() and new_dir.is_dir():
        try:
            data = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = None
        if isinstance(data, dict):
            data.update(key=moved.target, job=moved.entry.job)
            text = ",\n".join(f"  {json.dumps(k)}: {json.dumps(data[k], ensure_ascii=False)}"
                              for k in sorted(data))
            target.write_text("{\n" + text + "\n}\n", encoding="utf-8")
            meta.unlink()
    with contextlib.suppress(OSError):
        old_dir.rmdir()  # only when empty: anything else in it stays
        old_dir.parent.rmdir()  # the old job's folder, once its last instance left


@dataclass(frozen=True)
class LockMove:
    """What ``imgspec lock mv`` moved (or, with ``dry_run``, would move)."""

    moved: tuple[Moved, ...]
    dry_run: bool


def lock_mv(context: Context, source: str, target: str, *, dry_run: bool = False) -> LockMove:
    """Move the lock entry ``source`` (an instance key, or every entry of a job) to
    ``target``, with its files, as ``terraform state mv``.

    Refuses (``UsageError``) when nothing is at ``source``, when a destination already
    has an entry, or for a job to a key. Holds the run guard, so it never races a run.
    Needs only the manifest's ``name:``/``output_dir:``, as ``verify`` does.
    """
    move = Move(source, target)
    if source == target:
        raise UsageError(f"{source!r} is moved to itself; give the new name")
    if move.of_job != ("@" not in target):
        raise UsageError(f"{source!r} and {target!r} are not both jobs or both instance "
                         "keys; move a job to a job or a key to a key")
    paths = context.locate(context.header())
    manifest = context.manifest
    if dry_run:
        return LockMove(_checked(current_lock(paths.lockfile, manifest=manifest.name), move),
                        dry_run=True)
    with RunGuard(guard_path(paths.lockfile), subject=manifest.name), LockStore.open(
            paths.lockfile, manifest=manifest.name) as store:
        moved = _checked(store.lock, move)
        apply_moves(moved, store, paths.output_folder())
        # The output index names the moved entries' images under their old keys;
        # ``verify`` checks it against the lockfile.
        refresh_index(paths.lockfile, store.lock)
    return LockMove(moved, dry_run=False)


def _checked(lock: Lockfile, move: Move) -> tuple[Moved, ...]:
    """The entries ``move`` moves in ``lock``; ``UsageError`` if none, or one is refused."""
    sources = [k for k in sorted(lock.entries) if moved_key(k, move) is not None]
    if not sources:
        raise UsageError(f"no lock entry {'of job ' if move.of_job else ''}{move.source!r}; "
                         "`imgspec status` and the lockfile list the keys")
    taken = [t for k in sources if (t := moved_key(k, move)) in lock.entries]
    if taken:
        raise UsageError(f"{taken[0]!r} already has a lock entry; refusing to overwrite it "
                         "(`imgspec prune` drops it once it is orphaned)")
    _, moved, _ = relocate(lock, (move,))
    return moved
