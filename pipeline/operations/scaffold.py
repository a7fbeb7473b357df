"""``imgspec init``: set a folder up for imgspec in git, idempotently.

- a starter manifest (``manifests/example.yaml``) when the folder has no manifest;
- the manifest schema at ``schemas/manifest.schema.json``, where the starter's
  ``yaml-language-server`` line points, so editors validate manifests as they are typed
  (rewritten when an upgrade of imgspec changes it);
- ``.gitignore`` lines for what imgspec writes that is not meant for git (the output
  folder, the ``--simulate`` lockfile and simulated account, a run's journal and guard),
  in the repository's root (the folder's own outside git);
- ``*.lock.json merge=imgspec`` in the repository's ``.gitattributes``;
- the ``imgspec`` merge driver in the repository's own git config
  (``.git/config``; git never reads drivers from the repository's files, so
  every clone runs ``imgspec init`` once).

Each step reports whether it created, updated or left something, so running it
again says "unchanged" everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pipeline.errors import ImgspecError, UsageError
from pipeline.shell.store.files import write_atomic
from pipeline.shell.store.gitspec import git
from pipeline.shell.store.schemas import SCHEMA_NAMES, schema_dir

ATTRIBUTE = "*.lock.json merge=imgspec"
DRIVER_NAME = "imgspec lockfile merge (keeps every paid task)"
# %P: the path in the repository, for messages; %O %A %B: base, ours (the result), theirs.
DRIVER = "imgspec lock merge --name %P %O %A %B"
# Where ``init`` puts the manifest schema, relative to the folder; the starter manifest's
# first line points there from ``manifests/``.
SCHEMA_COPY = Path("schemas") / SCHEMA_NAMES[0]
# Unanchored, so they hold wherever in the repository the folder is.
IGNORED = (
    "outputs/",
    "*.simulate.lock.json",
    "*.simulate.api.jsonl*",
    "*.journal",
    "*.guard",
)
IGNORE_HEADER = "# imgspec: images and run-time files (manifests and *.lock.json go in git)"
STARTER = """\
# yaml-language-server: $schema=../schemas/manifest.schema.json
# A starter manifest from `imgspec init`. Check it, see its cost, try it for free:
#   imgspec validate manifests/example.yaml
#   imgspec plan manifests/example.yaml
#   imgspec run --simulate manifests/example.yaml
version: 1
name: example
budget: {max_cost: 5}
defaults: {model: wan2.7-image, size: 1K}
jobs:
  hero:
    prompt: "A {{ style }} product photo of a ceramic mug on a wooden table"
    matrix:
      style: [minimalist, warm]
"""

Outcome = Literal["created", "updated", "unchanged", "skipped"]


@dataclass(frozen=True, slots=True)
class Step:
    """One thing ``init`` did (or found already done, or could not do)."""

    outcome: Outcome
    what: str
    where: str


@dataclass(frozen=True)
class InitResult:
    """What ``imgspec init`` did, step by step."""

    folder: Path
    repository: Path | None  # None: not inside a git repository
    steps: tuple[Step, ...]


def has_manifest(folder: Path) -> bool:
    """Whether the folder (or its ``manifests/``) holds a YAML file that looks like a manifest."""
    for place in (folder, folder / "manifests"):
        for path in sorted([*place.glob("*.yaml"), *place.glob("*.yml")]):
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            lines = {line.split(":", 1)[0] for line in text.splitlines() if ":" in line}
            if {"version", "jobs"} <= lines:
                return True
    return False


def init(folder: Path) -> InitResult:
    """Scaffold a starter manifest if needed and register the lockfile merge driver."""
    if not folder.is_dir():
        raise UsageError(f"{folder}: no such folder")
    steps = [_starter(folder), _schema(folder / SCHEMA_COPY)]
    done = git(folder, "rev-parse", "--show-toplevel")
    if done.returncode != 0:
        steps.append(_ignores(folder / ".gitignore"))
        steps.append(Step("skipped", "merge driver", f"{folder} is not inside a git "
                          "repository: run `git init`, then `imgspec init` again"))
        return InitResult(folder, None, tuple(steps))
    root = Path(done.stdout.decode().strip())
    steps.append(_ignores(root / ".gitignore"))
    steps.append(_attributes(root / ".gitattributes"))
    steps.append(_config(root, "merge.imgspec.name", DRIVER_NAME))
    steps.append(_config(root, "merge.imgspec.driver", DRIVER))
    return InitResult(folder, root, tuple(steps))


def _starter(folder: Path) -> Step:
    if has_manifest(folder):
        return Step("unchanged", "starter manifest", "the folder already has a manifest")
    path = folder / "manifests" / "example.yaml"
    _write(path, STARTER)
    return Step("created", "starter manifest", str(path))


def _schema(path: Path) -> Step:
    wanted = (schema_dir() / SCHEMA_NAMES[0]).read_text(encoding="utf-8")
    current = _read(path) if path.exists() else None
    if current == wanted:
        return Step("unchanged", "manifest schema for editors", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    _write(path, wanted)
    return Step("created" if current is None else "updated", "manifest schema for editors",
                str(path))


def _ignores(path: Path) -> Step:
    text = _read(path) if path.exists() else ""
    present = {line.strip() for line in text.splitlines()}
    missing = [pattern for pattern in IGNORED if pattern not in present]
    if not missing:
        return Step("unchanged", "ignored run-time files", str(path))
    separator = "" if not text or text.endswith("\n") else "\n"
    block = "\n".join(([] if IGNORE_HEADER in present else [IGNORE_HEADER]) + missing)
    _write(path, f"{text}{separator}{block}\n")
    return Step("updated" if text else "created", "ignored run-time files", str(path))


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot be read ({exc})") from exc


def _attributes(path: Path) -> Step:
    text = _read(path) if path.exists() else ""
    if any(line.split() == ATTRIBUTE.split() for line in text.splitlines()):
        return Step("unchanged", f"`{ATTRIBUTE}`", str(path))
    separator = "" if not text or text.endswith("\n") else "\n"
    _write(path, f"{text}{separator}{ATTRIBUTE}\n")
    return Step("updated" if text else "created", f"`{ATTRIBUTE}`", str(path))


def _config(root: Path, name: str, value: str) -> Step:
    current = git(root, "config", "--local", "--get", name)
    if current.returncode == 0 and current.stdout.decode().rstrip("\n") == value:
        return Step("unchanged", f"git config {name}", value)
    done = git(root, "config", "--local", name, value)
    if done.returncode != 0:
        raise UsageError(f"git config --local {name} failed: "
                         f"{done.stderr.decode(errors='replace').strip()}")
    return Step("updated" if current.returncode == 0 else "created",
                f"git config {name}", value)


def _write(path: Path, text: str) -> None:
    try:
        write_atomic(path, text)
    except OSError as exc:
        raise ImgspecError(f"{path}: cannot be written ({exc.strerror}); check the "
                           "folder's permissions") from exc
