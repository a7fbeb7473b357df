"""Structure-aware mutations of real lockfiles and journals, and the checks they must pass.

Shared by ``tests/hostile/test_lockfiles.py`` (driven by hypothesis) and
``bench/fuzz_lockfiles.py`` (run by hand, 10,000s of cases). A mutation starts from
a lockfile a simulated run really wrote, changes a few values, types or keys (or
damages the text), and the reader must then either accept it, in which case
everything downstream works and it round-trips, or refuse it with a
``LockfileError``. Anything else is an escape: a traceback a user would see.
"""

from __future__ import annotations

import copy
import io
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from PIL import Image

from pipeline.cli.main import cli
from pipeline.core.expansion.expand import expand
from pipeline.core.expansion.instances import Expansion
from pipeline.core.lock.journal import fold_journal, journal_line
from pipeline.core.lock.lockfile import Lockfile, Output, dump_lockfile, parse_lockfile
from pipeline.core.lock.schema import check_stored_path
from pipeline.core.planning.plan import make_plan
from pipeline.errors import LockfileError
from pipeline.operations.housekeeping import summarise_lock
from pipeline.shell.store.manifests import load_manifest
from pipeline.views.plan import plan_json, plan_text
from pipeline.views.status import status_json, status_text
from tests.e2e.conftest import KEY, MANIFEST
from tests.simulator.simkit import simulators

# Placeholders for JSON text json.dumps cannot produce (1e400 and the like).
_RAW = ["1e400", "-1e400", "9" * 5000, "1" + "0" * 400, "NaN", "Infinity", "-Infinity",
        "1E+309", "-0", "0.0000000000000000000001", "1.5e300", "[" * 60 + "]" * 60]
HOSTILE: list[Any] = [
    None, True, False, 0, -1, 1, 2, 2**31, 2**53 + 1, 2**63, 10**30, 0.5, -0.0, 2.0, 1e308,
    "", " ", "x", "\x00", "\n", "../x", "/etc/passwd", "a\\b", "a/../b", "./a", "a//b",
    "../home/thesis.txt", "\ud800", "\udcff", "é", "sha256:", "0" * 64, "A" * 64,
    "http://h/x.png", "file:///etc/passwd", "done", "running", "submitting", "failed",
    "imgspec-" + "a" * 40, "bad key\r\n", [], {}, [1], [None], {"a": 1}, {"path": "x"},
    *[f"@@raw{i}@@" for i in range(len(_RAW))],
]


def raw_text(text: str) -> str:
    """Replace the placeholders (quoted, as json.dumps wrote them) by their raw tokens."""
    for index, token in enumerate(_RAW):
        text = text.replace(f'"@@raw{index}@@"', token)
    return text


Path_ = tuple[str | int, ...]


def _paths(value: Any, here: Path_ = ()) -> list[Path_]:
    out = [here]
    if isinstance(value, dict):
        for key, sub in value.items():
            out += _paths(sub, (*here, key))
    elif isinstance(value, list):
        for index, sub in enumerate(value):
            out += _paths(sub, (*here, index))
    return out


def _get(doc: Any, path: Path_) -> Any:
    for step in path:
        doc = doc[step]
    return doc


def mutate_value(rng: random.Random, doc: Any) -> Any:
    """``doc`` (decoded JSON) with one structure-aware change; a changed copy."""
    doc = copy.deepcopy(doc)
    paths = _paths(doc)
    path = rng.choice(paths[1:] or paths)
    if not path:
        return rng.choice(HOSTILE)
    parent, last = _get(doc, path[:-1]), path[-1]
    current = parent[last]
    op = rng.randrange(9)
    if op <= 2:
        parent[last] = rng.choice(HOSTILE)
    elif op == 3:
        del parent[last]
    elif op == 4 and isinstance(parent, dict):
        parent[rng.choice(["extra", "", "\ud800", "Status", "charged", "cost"])] = \
            rng.choice(HOSTILE)
    elif op == 5 and isinstance(parent, dict):  # rename the key (an entry key, a field)
        parent[rng.choice(["", " ", "\ud800", "x", f"{last}2", "job", "gen"])] = \
            parent.pop(last)
    elif op == 6 and isinstance(current, str):
        parent[last] = rng.choice([
            "/" + current, current + "/..", current.replace("/", "\\"), current + "\x00",
            "../../" + current, current[: len(current) // 2], current * 3, "./" + current])
    elif op == 7 and isinstance(current, int | float) and not isinstance(current, bool):
        parent[last] = rng.choice([-current, current * 10**9, current + 0.5, -1, 0,
                                   float(current)])
    elif op == 8:  # a value from elsewhere in the document: plausible, in the wrong place
        parent[last] = copy.deepcopy(_get(doc, rng.choice(paths)))
    else:
        parent[last] = rng.choice(HOSTILE)
    return doc


def mutate_text(rng: random.Random, text: str) -> str:
    """``text`` with a small textual damage: a cut, a lost or extra character."""
    if not text:
        return rng.choice(["", "{", "\x00"])
    at = rng.randrange(len(text))
    op = rng.randrange(4)
    if op == 0:
        return text[:at]
    if op == 1:
        return text[:at] + text[at + 1:]
    if op == 2:
        return text[:at] + rng.choice('{}[],:"\\0-e.nN \n\x00é\ud800') + text[at:]
    return text[:at] + text[at: at + rng.randrange(1, 80)] + text[at:]


def dumps(rng: random.Random, doc: Any) -> str:
    """JSON text of ``doc`` in one of the layouts a person or a tool might use."""
    text = json.dumps(doc, ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, 2]),
                      sort_keys=rng.random() < 0.5)
    return raw_text(text)


def mutated_lockfile(rng: random.Random, seed_text: str) -> str:
    """A lockfile text: the seed with 1 to 3 changes, now and then damaged as text."""
    doc = json.loads(seed_text)
    for _ in range(rng.randint(1, 3)):
        doc = mutate_value(rng, doc)
    text = dumps(rng, doc)
    return mutate_text(rng, text) if rng.random() < 0.15 else text


def journal_of(lock: Lockfile) -> list[str]:
    """Journal lines a run recording ``lock``'s entries would write, plus deletions."""
    lines = [journal_line(key, entry) for key, entry in lock.entries.items()]
    lines += [journal_line(key, None) for key in list(lock.entries)[:2]]
    return lines


def mutated_journal(rng: random.Random, lines: list[str]) -> str:
    """A journal text: one or two lines changed (as records or as text), or a torn end."""
    lines = list(lines)
    for _ in range(rng.randint(1, 2)):
        index = rng.randrange(len(lines))
        try:
            record = json.loads(lines[index])
        except ValueError:  # already damaged by an earlier round
            record = None
        if record is not None and rng.random() < 0.75:
            record = mutate_value(rng, record)
            lines[index] = raw_text(json.dumps(record, ensure_ascii=rng.random() < 0.5)) + "\n"
        else:
            lines[index] = mutate_text(rng, lines[index])
    text = "".join(lines)
    if rng.random() < 0.2:
        text = text[: rng.randrange(len(text) + 1)]
    return text


# --- what accepted input must then survive --------------------------------------------


def check_accepted(lock: Lockfile, expansion: Expansion | None, base: Path | None) -> None:
    """Everything downstream of reading works on an accepted lockfile, and it round-trips."""
    for entry in lock.entries.values():
        for output in entry.outputs:
            assert check_stored_path(output.path) is None, output.path
    text = dump_lockfile(lock)
    text.encode("utf-8")
    assert parse_lockfile(text).entries == lock.entries
    report = summarise_lock(Path("x.lock.json"), lock)
    status_text(report).encode("utf-8")
    json.dumps(status_json(report), ensure_ascii=False, allow_nan=False).encode("utf-8")
    if expansion is not None and base is not None:
        root = str(base)

        def present(output: Output) -> bool:
            return os.path.isfile(os.path.join(root, output.path))  # noqa: PTH113, PTH118

        plan = make_plan(expansion, lock, present=present, now=0.0)
        plan_text(plan).encode("utf-8")
        json.dumps(plan_json(plan), ensure_ascii=False, allow_nan=False).encode("utf-8")


def read_lockfile_text(text: str, expansion: Expansion | None = None,
                       base: Path | None = None) -> LockfileError | None:
    """Parse (and on success exercise) a lockfile text; its LockfileError, or None."""
    try:
        lock = parse_lockfile(text, source="fuzz.lock.json")
    except LockfileError as exc:
        str(exc).encode("utf-8")
        return exc
    check_accepted(lock, expansion, base)
    return None


def fold_journal_text(lock: Lockfile, text: str, expansion: Expansion | None = None,
                      base: Path | None = None) -> LockfileError | None:
    """Fold (and on success exercise) a journal text over ``lock``; its LockfileError, or None."""
    try:
        folded = fold_journal(lock, text, source="fuzz.lock.journal")
    except LockfileError as exc:
        str(exc).encode("utf-8")
        return exc
    check_accepted(folded, expansion, base)
    return None


# --- a real lockfile, from a simulated run -----------------------------------------------


@dataclass(frozen=True)
class RealProject:
    """A project a simulated run has filled: its manifest, lockfile text and expansion."""

    manifest: Path
    lockfile: Path
    text: str
    expansion: Expansion


def make_real_project(root: Path) -> RealProject:
    """The e2e manifest run against a fast simulator with some failing tasks, in ``root``."""
    (root / "manifests" / "assets").mkdir(parents=True)
    manifest = root / "manifests" / "shop.yaml"
    manifest.write_text(MANIFEST)
    buffer = io.BytesIO()
    Image.new("RGB", (320, 320), (30, 90, 160)).save(buffer, format="PNG")
    (root / "manifests" / "assets" / "mark.png").write_bytes(buffer.getvalue())
    with simulators(latency=(0.01, 0.05), seed=3, api_key=KEY) as start:
        sim = start(faults={"task.fail": 0.3})
        result = CliRunner().invoke(cli, ["run", str(manifest), "--base-url", sim.base_url,
                                          "--yes"], env={"APIMART_API_KEY": KEY},
                                    catch_exceptions=False)
    assert result.exit_code in (0, 4), result.output
    lockfile = root / "manifests" / "shop.lock.json"
    loaded, workspace = load_manifest(manifest)
    return RealProject(manifest, lockfile, lockfile.read_text(encoding="utf-8"),
                       expand(loaded, workspace))

