"""``imgspec init``: set a folder up for imgspec in git, idempotently.

- a starter manifest (``manifests/example.yaml``) when the folder has no manifest;
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
from pipeline.files import write_atomic
from pipeline.gitspec import git

ATTRIBUTE = "*.lock.json merge=imgspec"
DRIVER_NAME = "imgspec lockfile merge (keeps every paid task)"
# %P: the path in the repository, for messages; %O %A %B: base, ours (the result), theirs.
DRIVER = "imgspec lock merge --name %P %O %A %B"
STARTER = """\
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
    steps = [_starter(folder)]
    done = git(folder, "rev-parse", "--show-toplevel")
    if done.returncode != 0:
        steps.append(Step("skipped", "merge driver", f"{folder} is not inside a git "
                          "repository: run `git init`, then `imgspec init` again"))
        return InitResult(folder, None, tuple(steps))
    root = Path(done.stdout.decode().strip())
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


def _attributes(path: Path) -> Step:
    try:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot be read ({exc})") from exc
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
