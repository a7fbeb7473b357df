"""A manifest as it was at a git revision: its text, its includes and CSV files, its lockfile.

The shell around ``pipeline.core.planning.diff``: everything at the revision is read with git
(``git cat-file``), never from the working tree, so ``imgspec diff --against
origin/main`` compares what a pull request really changes.
"""

from __future__ import annotations

import subprocess
from pathlib import Path, PurePosixPath

from pipeline.core.expansion.expand import expand
from pipeline.core.expansion.instances import Expansion
from pipeline.core.lock.lockfile import Lockfile, lockfile_path, parse_lockfile
from pipeline.core.manifest.workspace import normalise_relpath
from pipeline.core.planning.diff import SpecDiff, compare
from pipeline.errors import DiffSideInvalid, ImgspecError, InputFileError, UsageError
from pipeline.shell.store.manifests import load_manifest, parse_manifest
from pipeline.shell.store.workspace import MAX_FILE_BYTES, MAX_MANIFEST_BYTES

GIT_TIMEOUT = 120.0  # seconds: only guards against a hung git


def git(root: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[bytes]:
    """Run ``git -C root ARGS`` (``stdin`` its input) and return what it did (``UsageError``
    without git)."""
    try:
        return subprocess.run(["git", "-C", str(root), *args], input=stdin.encode(),
                              capture_output=True, timeout=GIT_TIMEOUT, check=False)
    except FileNotFoundError as exc:
        raise UsageError("git is not installed (or not on PATH); imgspec diff reads the "
                         "manifest at the revision with git") from exc
    except subprocess.TimeoutExpired as exc:
        raise UsageError(f"git {' '.join(args)} did not answer within "
                         f"{GIT_TIMEOUT:.0f} s") from exc


def toplevel(folder: Path) -> Path:
    """The root of the git work tree holding ``folder`` (``UsageError`` outside one)."""
    done = git(folder, "rev-parse", "--show-toplevel")
    if done.returncode != 0:
        raise UsageError(f"{folder} is not inside a git repository; imgspec diff compares "
                         "with a revision (git init, commit, then diff)")
    return Path(done.stdout.decode().strip()).resolve()


def check_revision(root: Path, ref: str) -> None:
    """``UsageError`` unless ``ref`` names a commit."""
    if ref.startswith("-"):
        raise UsageError(f"--against {ref!r}: not a revision")
    done = git(root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if done.returncode != 0:
        raise UsageError(f"--against {ref}: no such revision in {root} (try HEAD, HEAD~1, "
                         "origin/main; in CI fetch enough history: fetch-depth: 0)")


def show(root: Path, ref: str, path: str, *, limit: int = MAX_FILE_BYTES) -> bytes | None:
    """The bytes of ``path`` (relative to the root) at ``ref``; ``None`` if it is not there.

    The blob's size is asked first and a blob over ``limit`` refused before a byte of
    it is read (reading a blob whole only to learn that it is too large costs about
    twice its size in memory).
    """
    spec = f"{ref}:{path}"
    if "\n" in spec:  # git's --batch-check reads one name a line
        raise InputFileError(f"{spec!r}: a path with a line break cannot be read at a revision")
    # The object id pins the blob: ``ref`` may move between this question and the read.
    found = git(root, "cat-file", "--batch-check", stdin=spec + "\n")
    fields = found.stdout.decode("utf-8", errors="replace").split()
    if found.returncode != 0 or len(fields) != 3 or fields[1] != "blob":
        return None  # "<spec> missing", or a folder (a tree) at that path
    oid, size = fields[0], int(fields[2])
    if size > limit:
        raise InputFileError(f"{spec}: {size:,} bytes is larger than the {limit:,} bytes "
                             "imgspec reads")
    done = git(root, "cat-file", "blob", oid)
    if done.returncode != 0:
        return None
    return done.stdout


class RevisionWorkspace:
    """The manifest's folder at a revision: what includes and input images read there."""

    def __init__(self, root: Path, ref: str, folder: PurePosixPath) -> None:
        self.root = root
        self.ref = ref
        self.folder = folder

    def read_bytes(self, relpath: str) -> bytes:
        """The file at the revision; ``InputFileError`` if it is not there."""
        path = (self.folder / normalise_relpath(relpath)).as_posix()
        data = show(self.root, self.ref, path)
        if data is None:
            raise InputFileError(f"{relpath}: no such file at {self.ref} ({path})")
        return data


def spec_diff(manifest_path: Path, *, against: str = "HEAD") -> SpecDiff:
    """Compare the manifest at ``against`` with the working tree's (``DiffSideInvalid`` names
    the side whose manifest does not validate)."""
    root = toplevel(manifest_path.resolve().parent)
    check_revision(root, against)
    rel = PurePosixPath(manifest_path.resolve().relative_to(root).as_posix())
    try:
        manifest, workspace = load_manifest(manifest_path)
        after = expand(manifest, workspace)
    except ImgspecError as exc:
        raise DiffSideInvalid(None, exc) from exc
    before = _expansion_at(root, against, rel)
    return compare(before, after, _lock_at(root, against, rel), against=against)


def _expansion_at(root: Path, ref: str, rel: PurePosixPath) -> Expansion | None:
    data = show(root, ref, rel.as_posix(), limit=MAX_MANIFEST_BYTES)
    if data is None:
        return None  # the manifest is new: everything is added
    try:
        manifest = parse_manifest(data.decode("utf-8"), file=f"{ref}:{rel}",
                                  workspace=RevisionWorkspace(root, ref, rel.parent))
        return expand(manifest, RevisionWorkspace(root, ref, rel.parent))
    except UnicodeDecodeError as exc:
        raise DiffSideInvalid(ref, InputFileError(f"{ref}:{rel}: not UTF-8 text")) from exc
    except ImgspecError as exc:
        raise DiffSideInvalid(ref, exc) from exc


def _lock_at(root: Path, ref: str, rel: PurePosixPath) -> Lockfile:
    lock_rel = lockfile_path(Path(rel)).as_posix()
    data = show(root, ref, lock_rel, limit=1 << 31)
    if data is None:
        return Lockfile(manifest=rel.name)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DiffSideInvalid(ref, InputFileError(f"{ref}:{lock_rel}: not UTF-8 text")
                              ) from exc
    return parse_lockfile(text, source=f"{ref}:{lock_rel}")
