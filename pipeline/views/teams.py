"""How ``imgspec lock merge`` and ``imgspec init`` report what they did."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.core.lock.merge import Merged
from pipeline.core.planning.selection import Shard

if TYPE_CHECKING:  # a type only: the view must not import the operation
    from pipeline.operations.scaffold import InitResult


def merge_text(merged: Merged, *, target: str) -> str:
    """One line for the merge, then one per entry the merge had to decide about."""
    entries = len(merged.lock.entries)
    lines = [f"imgspec: merged {merged.sources} lockfile(s) into {target}: "
             f"{entries:,} entr{'y' if entries == 1 else 'ies'}"
             + (f", {len(merged.superseded)} superseded" if merged.superseded else "")]
    for note in merged.notes:
        if note.kind == "superseded":
            lines.append(f"  superseded {note.key}: {note.detail}; kept task {note.kept}, "
                         f"task {note.other} kept as {note.moved_to} (`imgspec prune` "
                         "drops it once you no longer need it)")
        else:
            lines.append(f"  {note.key}: {note.detail} ({note.other})")
    if merged.index is not None:
        lines.append(f"  rewrote {merged.index} from the merged lockfile")
    return "\n".join(lines) + "\n"


def init_text(result: InitResult) -> str:
    """What ``init`` created, updated or found already in place, and what comes next."""
    lines = [f"  {step.outcome:<9} {step.what}: {step.where}" for step in result.steps]
    if result.repository is not None:
        lines.append("Lockfiles (*.lock.json) now merge entry by entry in `git merge`; "
                     "every clone runs `imgspec init` once (git keeps drivers out of clones).")
    return "imgspec init:\n" + "\n".join(lines) + "\n"


def shard_note(shard: Shard, lockfile: Path, main: Path) -> str:
    """Where shard K/N records, and how its work reaches the manifest's own lockfile."""
    own, into = _shown(lockfile), _shown(main)
    return (f"Shard {shard}: recording into {own} (after all shards: imgspec lock merge "
            f"--into {into} <each shard's lockfile>)")


def _shown(path: Path) -> str:
    """A path relative to the current folder when it is below it, else as it is."""
    relative = os.path.relpath(path)
    return path.as_posix() if relative.startswith("..") else Path(relative).as_posix()
