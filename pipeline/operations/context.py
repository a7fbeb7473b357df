"""Where a command happens: one manifest's files and the API it talks to, worked out once.

A ``Context`` is built at the edge (the CLI's options, or the Python API's
arguments) and handed down whole: the manifest, the lockfile (``--lockfile``, a
shard's, or the default beside the manifest), whether it is the ``--simulate``
side, and the API a run talks to. Nothing below the edge works a lockfile path or
the simulate flag out again. The output folder needs the manifest's ``name:`` and
``output_dir:``, so ``locate`` completes the picture once the header is read.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core.lock.lockfile import lockfile_path
from pipeline.core.manifest.document import Document, parse_yaml
from pipeline.core.manifest.model import Manifest
from pipeline.errors import ManifestError, UsageError
from pipeline.shell.store.confine import check_root
from pipeline.shell.store.guard import guard_path
from pipeline.shell.store.lockstore import journal_path
from pipeline.shell.store.manifests import load_manifest, parse_manifest
from pipeline.shell.store.objectstore import ObjectStore
from pipeline.shell.store.outputs import OutputFolder
from pipeline.shell.store.review import review_path
from pipeline.shell.store.store import (
    OutputStore,
    StoreURL,
    cache_folder,
    check_storage_options,
    parse_output_dir,
)
from pipeline.shell.store.workspace import DirectoryWorkspace, read_manifest_text

# The key the in-process simulator accepts (it takes any; this one names itself).
SIMULATOR_KEY = "sim-key"


@dataclass(frozen=True, slots=True)
class Api:
    """The API a run talks to: its origin and key, or a simulator the run starts itself.

    ``simulator``: given the run's lockfile, serves a simulated account (its state
    beside the lockfile) for as long as it is entered, and yields its base URL; the
    run enters it under its run guard and talks to that URL instead of ``base_url``.
    ``balance_unit``: the unit of the account's balance (the API does not say it);
    None when unknown.
    """

    base_url: str
    api_key: str
    simulator: Callable[[Path], AbstractContextManager[str]] | None = None
    balance_unit: str | None = None

    @classmethod
    def simulated(cls, simulator: Callable[[Path], AbstractContextManager[str]]) -> Api:
        """A simulator the run starts (no key, no cost)."""
        return cls(base_url="", api_key=SIMULATOR_KEY, simulator=simulator)

    def served_at(self, base_url: str, *, currency: str) -> Api:
        """This API once its simulator listens at ``base_url``; the simulated account
        bills in the plan's ``currency``."""
        return dataclasses.replace(self, base_url=base_url, balance_unit=currency)


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
class Context:
    """Where one manifest's command happens: its files, its side, the API it talks to.

    ``manifest`` is as the user named it; for a manifest built in code it is the
    file it would be (``<root>/<name>.yaml``) and ``text`` holds its YAML, which is
    then read from here and never from disk. ``lockfile`` is the one every step
    uses; ``main_lockfile`` the manifest's own on its side (``shop.lock.json``, or
    ``shop.simulate.lock.json``), which a shard starts from; ``lockfile_given``: the
    lockfile was named (``--lockfile``) rather than found. ``output_dir``
    (``--output-dir``): a folder or store URL instead of the manifest's ``output_dir:``.
    ``api`` is None for commands that talk to no API.
    """

    manifest: Path
    lockfile: Path
    main_lockfile: Path
    simulate: bool = False
    lockfile_given: bool = False
    api: Api | None = None
    text: str | None = None
    output_dir: str | None = None

    @property
    def project(self) -> Path:
        """The project that holds the manifest (outputs and reuse are found from it)."""
        return project_root(self.manifest)

    @property
    def outputs_suffix(self) -> str:
        """What this side's output folder names end with: ``.simulate``, or nothing."""
        return ".simulate" if self.simulate else ""

    @property
    def lock_suffix(self) -> str:
        """What this side's lockfile names end with (``.simulate.lock.json``, ``.lock.json``)."""
        return f"{self.outputs_suffix}.lock.json"

    @property
    def review(self) -> Path:
        """The review file beside the manifest (one for real and simulated runs)."""
        return review_path(self.manifest)

    def load(self) -> tuple[Manifest, DirectoryWorkspace]:
        """The manifest, parsed and validated, with its folder as the workspace."""
        if self.text is None:
            return load_manifest(self.manifest)
        workspace = DirectoryWorkspace(self.manifest.parent)
        return parse_manifest(self.text, file=str(self.manifest), workspace=workspace), workspace

    def header(self) -> Header:
        """The header of a manifest that need not validate (``verify``, ``prune``, ``mv``).

        Only the YAML must parse and ``name:`` be a valid slug: a job with an error
        does not stop anyone from checking the files they already have.
        """
        text = self.text if self.text is not None else read_manifest_text(self.manifest)
        return parse_header(parse_yaml(text, str(self.manifest)))

    def locate(self, header: Header) -> Paths:
        """The lockfile and output folder (``--simulate`` keeps separate ones).

        ``output_dir`` (``--output-dir``) overrides the manifest's ``output_dir:``. A
        folder is confined to the project, like includes and input images: a manifest
        from someone else cannot make a run write (or replace files) anywhere. A store
        URL names a prefix the credentials of the environment can write to.
        """
        root = self.project
        lock = Path(os.path.abspath(self.lockfile))  # noqa: PTH100
        chosen = self.output_dir if self.output_dir is not None else header.output_dir
        store = parse_output_dir(chosen) if chosen is not None else None
        if store is not None:
            if self.outputs_suffix:
                store = store.suffixed(self.outputs_suffix)
            return Paths(self.manifest, lock, cache_folder(store), store,
                         check_storage_options(header.storage_options))
        if self.output_dir is not None:
            outputs = Path(os.path.abspath(self.output_dir))  # noqa: PTH100
            if outputs != root and root not in outputs.parents:
                raise UsageError(f"--output-dir {self.output_dir} is outside the project "
                                 f"{root}: give a folder inside it, or a URL "
                                 "(file:///abs/folder, s3://…)")
        elif header.output_dir is not None:
            outputs = (self.manifest.parent / header.output_dir).resolve()
            if outputs != root and root not in outputs.parents:
                raise ManifestError([header.document.diagnostic(
                    ("output_dir",), f"{header.output_dir!r} resolves to {outputs}, outside "
                    f"the project {root}",
                    "give a folder inside the project (relative to the manifest), e.g. "
                    f"output_dir: ../outputs/{header.name}")])
        else:
            outputs = root / "outputs" / header.name
        if self.outputs_suffix:
            outputs = outputs.with_name(outputs.name + self.outputs_suffix)
        return Paths(self.manifest, lock, outputs)

    def with_lockfile(self, lockfile: Path) -> Context:
        """The same place with another lockfile (a shard's)."""
        return dataclasses.replace(self, lockfile=lockfile)

    def with_api(self, api: Api) -> Context:
        """The same place talking to ``api`` (a simulator that now listens)."""
        return dataclasses.replace(self, api=api)


def context(manifest: Path, *, simulate: bool = False, lockfile: Path | None = None,
            api: Api | None = None, text: str | None = None,
            output_dir: str | None = None) -> Context:
    """The context of ``manifest``: ``lockfile`` (``--lockfile``) or the default beside it
    (``shop.lock.json``, ``shop.simulate.lock.json`` for the simulate side), and
    ``output_dir`` (``--output-dir``) or the manifest's own."""
    main = lockfile_path(manifest, simulate=simulate)
    return Context(manifest, main if lockfile is None else lockfile, main, simulate=simulate,
                   lockfile_given=lockfile is not None, api=api, text=text,
                   output_dir=output_dir)


_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")  # the schema's pattern for name:


def parse_header(document: Document) -> Header:
    """``name:`` and ``output_dir:`` of a parsed manifest document that need not validate."""
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


def paths_for(manifest_path: Path, manifest: Manifest, *, simulate: bool = False) -> Paths:
    """The paths of a validated manifest read from ``manifest_path``, on either side."""
    return context(manifest_path, simulate=simulate).locate(Header.of(manifest))
