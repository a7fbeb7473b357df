"""The lockfile a shard works on: its own, starting from everything the manifest's knows.

A shard run (``--shard K/N``) records into its own lockfile (``--lockfile``, or
``shop.shard-K-of-N.lock.json`` beside the manifest), so shards can run side by
side, each under its own run guard, and be merged afterwards with ``imgspec lock
merge --into``. Before it plans, a shard folds the manifest's own lockfile into
its own (the same merge, so nothing is lost): work recorded there, by an earlier
merge or an unsharded run, is not paid for again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.lock.lockfile import Lockfile
from pipeline.core.lock.merge import merge_locks
from pipeline.core.planning.selection import Shard, shard_lockfile
from pipeline.operations.context import Context
from pipeline.operations.project import current_lock
from pipeline.shell.store.guard import RunGuard, guard_path
from pipeline.shell.store.lockstore import write_lockfile


@dataclass(frozen=True, slots=True)
class ShardLock:
    """Where a shard's lockfile is and the manifest's own lockfile it starts from."""

    path: Path
    main: Path
    shard: Shard

    def combined(self, *, manifest: str) -> Lockfile:
        """The shard's lockfile with the manifest's folded in (read-only: for ``plan``)."""
        own = current_lock(self.path, manifest=manifest)
        if self.path == self.main or not self.main.is_file():
            return own
        return merge_locks([own, current_lock(self.main, manifest=manifest)]).lock

    def sync(self, *, manifest: str) -> None:
        """Write ``combined`` into the shard's lockfile, under its run guard (for ``run``)."""
        if self.path == self.main or not self.main.is_file():
            return
        with RunGuard(guard_path(self.path), subject=manifest):
            own = current_lock(self.path, manifest=manifest)
            combined = self.combined(manifest=manifest)
            if combined != own:
                write_lockfile(self.path, combined)


def shard_lock(context: Context, shard: Shard) -> ShardLock:
    """The lockfile of ``shard`` (the context's, if one was named, else the default beside
    the manifest's) and the manifest's own lockfile."""
    main = context.main_lockfile
    path = context.lockfile if context.lockfile_given else shard_lockfile(main, shard)
    return ShardLock(Path(os.path.abspath(path)), Path(os.path.abspath(main)),  # noqa: PTH100
                     shard)
