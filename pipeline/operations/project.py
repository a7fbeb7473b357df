"""Where a manifest's lockfile and outputs live, and the load → expand → plan pipeline.

This is the seam between the pure core and the shell: it reads the manifest
and the lockfile from disk, checks which recorded outputs still exist, and
hands plain values to the core.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from pipeline.core.expansion.expand import Expanding, expand
from pipeline.core.expansion.instances import Expansion
from pipeline.core.lock.lockfile import Lockfile, Output, lockfile_path
from pipeline.core.lock.moves import former_paths, plan_moves
from pipeline.core.manifest.document import Document, parse_yaml
from pipeline.core.manifest.load import load_manifest, read_manifest_text
from pipeline.core.manifest.model import Manifest
from pipeline.core.planning.plan import PaidResults, Plan, PlanHead, Planner, Tally, make_plan
from pipeline.errors import ImgspecError, ManifestError, UsageError
from pipeline.operations.gallery.review import read_review, reroll_keys, review_path
from pipeline.shell.store.confine import check_root
from pipeline.shell.store.guard import guard_path
from pipeline.shell.store.journal import fold_journal, journal_path, read_journal, read_lockfile
from pipeline.shell.store.objectstore import ObjectStore
from pipeline.shell.store.outputs import OutputFolder
from pipeline.shell.store.reuse_scan import Where, project_results
from pipeline.shell.store.store import (
    OutputStore,
    StoreURL,
    cache_folder,
    check_storage_options,
    parse_output_dir,
)
from pipeline.shell.store.workspace import DirectoryWorkspace
from pipeline.views.plan import write_plan_document, write_plan_items, write_plan_json


@dataclass(frozen=True, slots=True)
class Paths:
    """Where everything of one manifest lives, worked out once and passed down.

    ``manifest`` is as the user named it (messages show it that way); the others
    are absolute, so no comparison depends on the current directory.
    """

    manifest: Path
    lockfile: Path
    outputs: Path  # outputs/<name> (or output_dir:), holding one folder per job
    # An object-store output_dir (s3://…): ``outputs`` is then its local cache folder.
    store: StoreURL | None = None
    storage_options: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def journal(self) -> Path:
        """The lockfile's journal (``shop.lock.json`` → ``shop.lock.journal``)."""
        return journal_path(self.lockfile)

    @property
    def guard(self) -> Path:
        """The run guard (``shop.run.guard``): one run at a time per lockfile."""
        return guard_path(self.lockfile)

    @property
    def base(self) -> Path:
        """Output paths in the lockfile are relative to the lockfile's folder."""
        return self.lockfile.parent

    def output_folder(self) -> OutputStore:
        """The output folder, with the lockfile's folder its stored paths are relative to
        (or the object store, its stored paths relative to its prefix).

        ``LinkLeadsOutside`` when a symbolic link (``outputs -> /tmp/x``, say) puts its
        real path outside the project: as for ``output_dir:``, nothing is written there.
        """
        if self.store is not None:
            return ObjectStore(self.store, options=self.storage_options, cache=self.outputs)
        return self.local_folder()

    def local_folder(self) -> OutputFolder:
        """The output folder on disk (``UsageError`` for an object store)."""
        if self.store is not None:
            raise UsageError(f"this command works on an output folder on disk, and "
                             f"output_dir is {self.store}")
        check_root(self.outputs, project_root(self.manifest),
                   advice="; or give output_dir: a folder inside the project")
        return OutputFolder(self.outputs, self.base)

    @property
    def shown(self) -> Path | str:
        """Where the outputs are, as messages name it: the folder, or the store URL."""
        return self.store.text if self.store is not None else self.outputs

    @property
    def destination(self) -> str:
        """The output folder as a user names it: relative to the project, with a slash."""
        if self.store is not None:
            return f"{self.store}/"
        return Path(os.path.relpath(self.outputs, project_root(self.manifest))).as_posix() + "/"


@dataclass(frozen=True, slots=True)
class Header:
    """What locating a manifest's files needs from it: ``name:`` and ``output_dir:``."""

    name: str
    output_dir: str | None
    document: Document  # for the position of a bad value

    @classmethod
    def of(cls, manifest: Manifest) -> Header:
        """The header of a validated manifest."""
        return cls(manifest.name, manifest.output_dir, manifest.document)

    @property
    def storage_options(self) -> object:
        """The manifest's ``storage_options:`` (options of an object-store output_dir)."""
        data = self.document.data
        return data.get("storage_options") if isinstance(data, dict) else None


_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")  # the schema's pattern for name:


def read_header(manifest_path: Path) -> Header:
    """The header of a manifest that need not validate (``verify``, ``status``, ``prune``).

    Only the YAML must parse and ``name:`` be a valid slug: a job with an error
    does not stop anyone from checking the files they already have.
    """
    document = parse_yaml(read_manifest_text(manifest_path), str(manifest_path))
    data = document.data if isinstance(document.data, dict) else {}
    name, output_dir = data.get("name"), data.get("output_dir")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ManifestError([document.diagnostic(
            ("name",) if "name" in data else (),
            f"name is {name!r}, so the output folder cannot be found",
            "give name: a slug such as storefronts (lower-case letters, digits, . _ -)")])
    return Header(name, output_dir if isinstance(output_dir, str) and output_dir else None,
                  document)


def project_root(manifest_path: Path) -> Path:
    """The project that holds the manifest: the parent of an enclosing ``manifests/`` folder.

    Outputs follow from the manifest's location, not from the current directory.
    """
    folder = manifest_path.resolve().parent
    for candidate in (folder, *folder.parents):
        if candidate.name == "manifests":
            return candidate.parent
    return folder


def locate(manifest_path: Path, header: Header, *, simulate: bool = False,
           lockfile: Path | None = None, output_dir: str | None = None) -> Paths:
    """The lockfile and output folder of a manifest (``--simulate`` keeps separate ones).

    ``lockfile`` (``--lockfile``) overrides the default beside the manifest, and
    ``output_dir`` (``--output-dir``) the manifest's ``output_dir:``. A folder
    ``output_dir:`` is confined to the project, like includes and input images: a
    manifest from someone else cannot make a run write (or replace files) anywhere.
    A store URL names a prefix the credentials of the environment can write to.
    """
    root = project_root(manifest_path)
    lock = lockfile if lockfile is not None else lockfile_path(manifest_path, simulate=simulate)
    lock = Path(os.path.abspath(lock))  # noqa: PTH100
    chosen = output_dir if output_dir is not None else header.output_dir
    store = parse_output_dir(chosen) if chosen is not None else None
    if store is not None:
        if simulate:
            store = store.suffixed(".simulate")
        return Paths(manifest_path, lock, cache_folder(store), store,
                     check_storage_options(header.storage_options))
    if output_dir is not None:
        outputs = Path(os.path.abspath(output_dir))  # noqa: PTH100
        if outputs != root and root not in outputs.parents:
            raise UsageError(f"--output-dir {output_dir} is outside the project {root}: give "
                             "a folder inside it, or a URL (file:///abs/folder, s3://…)")
    elif header.output_dir is not None:
        outputs = (manifest_path.parent / header.output_dir).resolve()
        if outputs != root and root not in outputs.parents:
            raise ManifestError([header.document.diagnostic(
                ("output_dir",), f"{header.output_dir!r} resolves to {outputs}, outside "
                f"the project {root}",
                "give a folder inside the project (relative to the manifest), e.g. "
                f"output_dir: ../outputs/{header.name}")])
    else:
        outputs = root / "outputs" / header.name
    if simulate:
        outputs = outputs.with_name(outputs.name + ".simulate")
    return Paths(manifest_path, lock, outputs)


def paths_for(manifest_path: Path, manifest: Manifest, *, simulate: bool = False) -> Paths:
    """``locate`` for a validated manifest."""
    return locate(manifest_path, Header.of(manifest), simulate=simulate)


def current_lock(lock_path: Path, *, manifest: str) -> Lockfile:
    """The lockfile with any journal a crashed run left folded in (read-only: nothing written)."""
    lock = read_lockfile(lock_path, manifest=manifest)
    journal = journal_path(lock_path)
    text = read_journal(journal)
    return lock if text is None else fold_journal(lock, text, source=str(journal))


@dataclass(frozen=True)
class Prepared:
    """Everything ``plan`` and ``run`` need: manifest, expansion, lockfile, plan, paths.

    The plan carries the lockfile it was made from (``lock``), as Terraform's plan
    carries its state: a run executes against that very state.
    """

    manifest: Manifest
    workspace: DirectoryWorkspace
    expansion: Expansion
    lock: Lockfile
    plan: Plan
    paths: Paths


def prepare(manifest_path: Path, *, simulate: bool = False, max_cost: Decimal | None = None,
            lockfile: Path | None = None, lock: Lockfile | None = None,
            rehash: bool = False, output_dir: str | None = None) -> Prepared:
    """Load, validate, expand and plan a manifest against its lockfile.

    ``lock``: the state to plan against when the caller already holds it (a run's
    open lock store); otherwise the lockfile (and any crash journal) is read.
    ``rehash``: check recorded images by their sha256, not only their size.
    ``output_dir`` (``--output-dir``): a folder or store URL instead of the manifest's.
    """
    manifest, workspace = load_manifest(manifest_path)
    expansion = expand(manifest, workspace)
    paths = locate(manifest_path, Header.of(manifest), simulate=simulate, lockfile=lockfile,
                   output_dir=output_dir)
    if lock is None:
        lock = current_lock(paths.lockfile, manifest=manifest_path.name)
    folder = paths.output_folder()
    folder.check_entries(lock.entries.values())
    # ``moved:``: the plan is made against the lockfile as the moves leave it; the run
    # applies them to the lockfile and the files first.
    relocation = plan_moves(manifest.moves, lock, keys={i.key for i in expansion.instances},
                            jobs=manifest.jobs, diagnostic=manifest.document.diagnostic)
    lock = relocation.lock
    present = intact_on_disk(folder, rehash=rehash)
    if relocation.moved:
        present = found_before_move(present, former_paths(relocation.moved))
    # Re-rolls a reviewer asked for (``imgspec review``) are planned, and paid, like changes.
    rerolls = reroll_keys(read_review(review_path(manifest_path)), lock)
    plan = make_plan(expansion, lock, present=present,
                     max_cost=max_cost, now=time.time(), rerolls=rerolls,
                     destination=paths.destination, moves=relocation.moved,
                     paid=paid_results(paths, lock, simulate=simulate))
    if relocation.warnings:
        plan = dataclasses.replace(plan, warnings=(*plan.warnings, *relocation.warnings))
    return Prepared(manifest, workspace, expansion, lock, plan, paths)


def found_before_move(present: Callable[[Output], bool],
                      former: Mapping[str, str]) -> Callable[[Output], bool]:
    """``present`` for a plan with moves: an output the run has yet to move is intact
    where it is now (its former path), or already where it goes (a run stopped between
    moving the files and recording the move)."""

    def either(output: Output) -> bool:
        old = former.get(output.path)
        return present(output) or (old is not None
                                   and present(dataclasses.replace(output, path=old)))

    return either


def write_plan_streamed(manifest_path: Path, write: Callable[[str], object], *,
                        simulate: bool = False, max_cost: Decimal | None = None,
                        lockfile: Path | None = None, rehash: bool = False,
                        output_dir: str | None = None) -> PlanHead:
    """``prepare`` then ``write_plan_json``, in one pass over the instances.

    For ``plan --json`` of the whole manifest: each instance is planned and its JSON
    line written to a temporary file as it is expanded, and dropped, so a million
    instances are never held at once. The head (counts, cost, orphans, warnings) is
    known only once the last has passed; it is written first, then the items are
    copied after it. Nothing reaches ``write`` if the manifest has an error.
    """
    manifest, workspace = load_manifest(manifest_path)
    if manifest.moves:
        # Moves need every instance key before the first item is planned; manifests
        # with ``moved:`` are planned whole (the moves are short-lived edits).
        prepared = prepare(manifest_path, simulate=simulate, max_cost=max_cost,
                           lockfile=lockfile, rehash=rehash, output_dir=output_dir)
        write_plan_json(prepared.plan, write)
        return prepared.plan.head()
    expanding = Expanding(manifest, workspace)
    paths = locate(manifest_path, Header.of(manifest), simulate=simulate, lockfile=lockfile,
                   output_dir=output_dir)
    try:
        lock = current_lock(paths.lockfile, manifest=manifest_path.name)
        folder = paths.output_folder()
        folder.check_entries(lock.entries.values())
        rerolls = reroll_keys(read_review(review_path(manifest_path)), lock)
    except ImgspecError:
        # ``prepare`` expands before it reads the lockfile: the manifest's errors come
        # first. Expand (planning nothing) to find them; without any, this error stands.
        for _ in expanding:
            pass
        expanding.finish()
        raise
    planner = Planner(manifest, lock, present=intact_on_disk(folder, rehash=rehash),
                      now=time.time(), rerolls=rerolls,
                      paid=paid_results(paths, lock, simulate=simulate))
    tally = Tally()
    try:
        spool = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115 (with below)
    except OSError as exc:
        raise _spool_error(exc) from exc
    with spool:

        def aside(text: str) -> None:
            try:
                spool.write(text)
            except OSError as exc:
                raise _spool_error(exc) from exc

        def copy_items() -> None:
            while True:
                try:
                    chunk = spool.read(1 << 20)
                except OSError as exc:
                    raise _spool_error(exc) from exc
                if not chunk:
                    return
                write(chunk)  # the caller's stream: its errors are its own

        count = write_plan_items(map(planner.item, expanding), aside, each=tally.add)
        head = planner.head(tally, warnings=expanding.finish(), max_cost=max_cost,
                            destination=paths.destination)
        try:
            spool.seek(0)
        except OSError as exc:
            raise _spool_error(exc) from exc
        write_plan_document(head, count > 0, copy_items, write)
    return head


def _spool_error(exc: OSError) -> ImgspecError:
    """The temporary file ``write_plan_streamed`` keeps the items in failed (a full disk)."""
    return ImgspecError(
        f"cannot keep the plan's items in a temporary file in {tempfile.gettempdir()}: "
        f"{exc.strerror or exc}; free some space there, or set TMPDIR to a folder with room")


def paid_results(paths: Paths, lock: Lockfile, *, simulate: bool) -> PaidResults:
    """The project's paid results for planning the manifest of ``paths`` (``reuse_scan``)."""
    where = Where(project_root(paths.manifest), Path(os.path.abspath(paths.manifest)),  # noqa: PTH100
                  paths.lockfile, Path(os.path.abspath(paths.outputs)))  # noqa: PTH100
    return project_results(where, lock, simulate=simulate,
                           read_lock=lambda path: current_lock(path, manifest=path.name))


def intact_on_disk(folder: OutputStore, *, rehash: bool = False) -> Callable[[Output], bool]:
    """The plan's predicate: a recorded output is there, of the recorded size (and, with
    ``rehash``, sha256): a regular file in a folder, an object in a store."""
    return folder.present(rehash=rehash)
