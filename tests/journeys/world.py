"""The journey's world: a small project on disk, the real CLI in subprocesses, one simulator,
and the oracle saying what a careful user expects after each step.

The oracle is written from what a user can know, not from imgspec's output text:

- the instances are the ones the manifest describes (computed here from the model of the
  manifest, not read back from imgspec);
- an instance is paid for once per change of its rendered request: the simulator's own
  record of which request each task was charged for is the judge (``Charges``);
- a request whose paid result the project still holds (a done entry of any of its
  lockfiles, or a kept output folder's ``meta.json``, with every image's file intact or
  every link unexpired: ``World.held``) is owed nothing, under whatever name, manifest
  or clone it is asked for again;
- the account paid exactly what the lockfiles of the project and its clones record
  (entries' charges and retired history, the history a clone shares counted once),
  checked after every step (``World.check_money``);
- a run that exits 0 leaves every instance it was asked to do done, with its files intact
  and an ``index.json``;
- a lock entry marked done names files that exist with the recorded sha256 (unless the user
  damaged them since);
- nothing the user did not ask to remove disappears;
- no traceback, and the exit code matches the outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import httpx

from pipeline.core.lock.lockfile import Lockfile, Output
from pipeline.operations.project import current_lock
from pipeline.simulator import RunningSimulator, SimulatorConfig, run_in_thread
from pipeline.simulator.faults import FaultInjector

_SESSIONS = itertools.count(1)
STEPS_TAKEN = [0]  # steps of every journey in this process, for bench/journeys.py
ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-journey-7d1e"
NAME = "j"
TRACEBACK = "Traceback (most recent call last)"
# Guards against a hung subprocess only; no assertion is timed.
HANG_GUARD = 180.0

SHOPS = ("bakery", "florist", "tea house", "Café")
SEASONS = ("spring", "winter", "autumn")
ROWS = (("mug", "red"), ("lamp", "blue"), ("vase", "sea green"), ("chair", "ochre"))

# Faults that a careful client recovers from by itself (retries, idempotent replays),
# plus task.fail, after which the item fails (exit 4) and a rerun retries it.
# download.expired is left out: an expired URL legitimately costs a new generation.
FAULTS: Mapping[str, float] = {
    "submit.429": 0.1, "submit.5xx": 0.1, "submit.reset": 0.05, "submit.lost_reply": 0.15,
    "poll.429": 0.1, "poll.5xx": 0.1, "poll.malformed": 0.05,
    "download.truncate": 0.1, "download.5xx": 0.1, "task.fail": 0.1,
}

CWDS = ("root", "manifests", "elsewhere")  # where the user stands
PATH_STYLES = ("relative", "absolute")  # how they name the manifest
Cwd = str  # one of CWDS
PathStyle = str  # one of PATH_STYLES
Signal = str  # "none", "kill" (SIGKILL) or "int" (SIGINT, Ctrl-C)


class JourneyFailure(AssertionError):
    """An invariant broke; the message carries the journey so far."""


# -- the simulator --------------------------------------------------------------------------


@dataclass(frozen=True)
class Charges:
    """What the simulator has charged: net images, and live (unrefunded) tasks per request."""

    images: int  # images_charged of GET /_sim/ledger
    tasks_created: int
    live_by_digest: Mapping[str, frozenset[str]]  # body digest -> unrefunded task ids
    untracked: frozenset[str]  # tasks created without an Idempotency-Key
    task_images: Mapping[str, int]  # unrefunded task id -> images charged
    known: frozenset[str]  # every task id, refunded or not
    task_cost: Mapping[str, Decimal] = field(default_factory=dict)  # unrefunded id -> CNY
    gross: Mapping[str, Decimal] = field(default_factory=dict)  # every id -> CNY, refunds too

    def live(self, fingerprint: str, *, since: Charges | None = None) -> frozenset[str]:
        """Unrefunded tasks charged for the request with this fingerprint (after ``since``)."""
        digest = fingerprint.removeprefix("sha256:")
        tasks = self.live_by_digest.get(digest, frozenset())
        if since is not None:
            tasks = tasks - since.all_tasks()
        return tasks

    def new_images(self, since: Charges) -> int:
        """Images charged by tasks created after ``since`` and not refunded.

        Unlike the difference of two ledger totals, a refund of an older task (one a
        killed run left running) does not count against it.
        """
        return sum(n for task, n in self.task_images.items() if task not in since.known)

    def cost_since(self, since: Charges) -> Decimal:
        """What the account paid (CNY, net of refunds) for tasks created after ``since``."""
        return sum((c for task, c in self.task_cost.items() if task not in since.known),
                   Decimal(0))

    def gross_since(self, since: Charges) -> Decimal:
        """What tasks created after ``since`` were charged, refunds not deducted."""
        return sum((c for task, c in self.gross.items() if task not in since.known),
                   Decimal(0))

    def all_tasks(self) -> frozenset[str]:
        """Every live task id."""
        return frozenset().union(*self.live_by_digest.values()) | self.untracked


class SharedSim:
    """One simulator for the whole test run; faults switched per step.

    The per-request attribution and the fault switch reach into the simulator's state
    from its own event loop thread (the way ``RunningSimulator.ledger`` does): the HTTP
    ledger only has totals, and the simulator has no endpoint to change faults at runtime.
    """

    def __init__(self) -> None:
        self.running: RunningSimulator = run_in_thread(SimulatorConfig(
            latency=(0.05, 0.3), seed=8, api_key=KEY, retry_after=0))

    @property
    def base_url(self) -> str:
        """The simulator's origin."""
        return self.running.base_url

    def _in_loop(self, fn: Any) -> Any:
        async def call() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), self.running._loop).result(30)

    def set_faults(self, rates: Mapping[str, float], seed: int) -> None:
        """Inject ``rates`` from now on (seeded), or none for ``{}``."""
        inner = self.running._sim

        def swap() -> None:
            inner.faults = FaultInjector(rates, seed)

        self._in_loop(swap)

    def task_times(self) -> list[float]:
        """When each task was created (simulator clock, seconds), in order."""
        inner = self.running._sim
        times: list[float] = self._in_loop(
            lambda: sorted(task.created_at for task in inner.store.tasks.values()))
        return times

    def charges(self) -> Charges:
        """A snapshot of what has been charged, failed tasks refunded up to now."""
        inner = self.running._sim

        def snapshot() -> Charges:
            ledger = inner.ledger()  # settles the refunds of tasks that have failed by now
            store = inner.store
            digest_of = {task_id: digest for digest, task_id in store.idempotency.values()}
            live: dict[str, set[str]] = {}
            untracked: set[str] = set()
            images: dict[str, int] = {}
            cost: dict[str, Decimal] = {}
            gross = {task_id: task.charge for task_id, task in store.tasks.items()}
            for task_id, task in store.tasks.items():
                if task.refunded:
                    continue
                images[task_id] = task.n
                cost[task_id] = task.charge
                if task_id in digest_of:
                    live.setdefault(digest_of[task_id], set()).add(task_id)
                else:
                    untracked.add(task_id)
            return Charges(ledger.images_charged, ledger.tasks_created,
                           {d: frozenset(t) for d, t in live.items()}, frozenset(untracked),
                           images, frozenset(store.tasks), cost, gross)

        # The public ledger must agree with the per-task view this oracle relies on. A task
        # a killed run left behind may fail (and be refunded) between the two readings, so
        # they are taken again until they agree.
        for _ in range(5):
            public = httpx.get(f"{self.base_url}/_sim/ledger", timeout=30).json()
            result: Charges = self._in_loop(snapshot)
            if public["images_charged"] == result.images:
                break
        else:
            raise JourneyFailure(f"GET /_sim/ledger says {public['images_charged']} images "
                                 f"charged, the simulator's tasks {result.images}")
        if sum(result.task_images.values()) != result.images:
            raise JourneyFailure("the simulator's unrefunded tasks do not add up to its "
                                 "ledger: the journey's charge attribution is unsound")
        return result

    def stop(self) -> None:
        """Stop serving."""
        self.running.stop()


# -- the manifest the user edits ---------------------------------------------------------------


@dataclass
class Model:
    """The project as the user wrote it: a matrix job, a CSV job, an optional third job."""

    a_name: str = "a"
    a_prompt: int = 0
    a_n: int = 2
    shops: list[str] = field(default_factory=lambda: ["bakery", "florist"])
    seasons: list[str] = field(default_factory=lambda: ["spring", "winter"])
    b_prompt: int = 0
    rows: list[tuple[str, str]] = field(default_factory=lambda: [ROWS[0], ROWS[1]])
    c_present: bool = False
    c_prompt: int = 0
    moved: list[tuple[str, str]] = field(default_factory=list)  # (from, to) jobs
    # Every journey shares one simulator: a session tag in the prompts keeps one journey's
    # requests (and so its Idempotency-Keys) from being answered with another's tasks.
    session: str = field(default_factory=lambda: f"s{next(_SESSIONS)}")

    def manifest_text(self) -> str:
        """The manifest's YAML (values as JSON strings, which YAML reads as they are)."""
        tag = ", {{ session }}"
        jobs = [
            f"  {self.a_name}:",
            f'    prompt: "A {{{{ shop }}}} in {{{{ season }}}} light, take {self.a_prompt}{tag}"',
            f"    n: {self.a_n}",
            "    matrix:",
            f"      shop: {json.dumps(self.shops, ensure_ascii=False)}",
            f"      season: {json.dumps(self.seasons, ensure_ascii=False)}",
            "  b:",
            f'    prompt: "Studio photo of a {{{{ colour }}}} {{{{ product }}}}, '
            f'take {self.b_prompt}{tag}"',
            "    matrix: {include: rows.csv}",
        ]
        if self.c_present:
            jobs += ["  c:", f'    prompt: "A logo for a flower shop, take {self.c_prompt}{tag}"']
        head = [
            "# A journey test's project: edited step by step.",
            "version: 1",
            f"name: {NAME}",
            "budget: {max_cost: 100}",
            f"vars: {{session: {self.session}}}",
            "defaults: {model: wan2.7-image, size: 1K}",
            "jobs:",
        ]
        moves = ["moved:"] + [f"  - {{from: {a}, to: {b}}}" for a, b in self.moved]
        return "\n".join(head + jobs + (moves if self.moved else [])) + "\n"

    def copy_text(self, name: str) -> str:
        """A second manifest of the project holding a copy of the matrix job, as it is now."""
        own = self.manifest_text().split("\n")
        start = own.index("jobs:") + 1
        return "\n".join([line.replace(f"name: {NAME}", f"name: {name}")
                          for line in own[:start]] + own[start:start + 6]) + "\n"

    def csv_text(self) -> str:
        """The CSV of job b."""
        return "product,colour\n" + "".join(f"{p},{c}\n" for p, c in self.rows)

    def jobs(self) -> list[str]:
        """The job ids."""
        return [self.a_name, "b", *(["c"] if self.c_present else [])]

    def instances(self) -> dict[str, tuple[str, dict[str, str], int]]:
        """key -> (job, matrix values, n): what the manifest describes, each key once.

        Every value of the pools is a plain word or words, which a key shows as it is.
        """
        out: dict[str, tuple[str, dict[str, str], int]] = {}
        for shop in self.shops:
            for season in self.seasons:
                out[f"{self.a_name}@shop={shop},season={season}"] = (
                    self.a_name, {"shop": shop, "season": season}, self.a_n)
        for product, colour in self.rows:
            out[f"b@product={product},colour={colour}"] = (
                "b", {"product": product, "colour": colour}, 1)
        if self.c_present:
            out["c"] = ("c", {}, 1)
        return out

    def duplicates(self) -> bool:
        """Whether a matrix axis or the CSV repeats a value (the user's slip)."""
        return (len(set(self.shops)) < len(self.shops)
                or len(set(self.seasons)) < len(self.seasons)
                or len(set(self.rows)) < len(self.rows))

    def axis_values(self) -> list[tuple[str, str]]:
        """Every (axis, value) a ``--where`` can name."""
        pairs = [("shop", s) for s in self.shops] + [("season", s) for s in self.seasons]
        pairs += [("product", p) for p, _ in self.rows] + [("colour", c) for _, c in self.rows]
        return sorted(set(pairs))


# -- one step's outcome ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What a command did."""

    args: tuple[str, ...]
    cwd: Path
    code: int
    out: str
    err: str

    def describe(self) -> str:
        """For the journey log."""
        tail = (self.out + self.err).strip().splitlines()[-12:]
        return (f"$ (cd {self.cwd}; imgspec {' '.join(self.args)}) -> exit {self.code}\n"
                + "\n".join("    " + line for line in tail))


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


PLAN_LINE = re.compile(r"^Plan: (\d+) to submit \((\d+) images?.*$", re.MULTILINE)
SKIPPED = re.compile(r"(\d+) skipped")
TRANSIENT_SUFFIXES = (".journal", ".guard", ".part", ".tmp")


@dataclass
class World:
    """One journey: a fresh project, what the user did, and what must hold."""

    sim: SharedSim
    root: Path
    elsewhere: Path
    model: Model = field(default_factory=Model)
    log: list[str] = field(default_factory=list)
    # Charging: per fingerprint, how many times the user's edits opened a new "version" of
    # an instance that a run then asked for; each may be paid for once.
    allowed: Counter[str] = field(default_factory=Counter)
    epoch: dict[str, str] = field(default_factory=dict)  # key -> fingerprint of its version
    epoch_start: dict[str, Charges] = field(default_factory=dict)  # key -> charges then
    delivered: dict[str, str] = field(default_factory=dict)  # key -> fingerprint done
    damaged: set[Path] = field(default_factory=set)  # outputs the user deleted or truncated
    start: Charges | None = None
    steps: int = 0
    # A run was killed or Ctrl-C'd: a task it submitted may not be recorded yet.
    interrupted: bool = False
    clones: list[Path] = field(default_factory=list)  # other checkouts on the same account
    # Per clone: the spend its lockfiles recorded when it was made (the history it shares
    # with the project, which the account paid once).
    clone_base: dict[Path, Decimal] = field(default_factory=dict)
    clone_dups: dict[Path, bool] = field(default_factory=dict)  # its manifest is refused
    # A clone's lockfiles name images it never fetched (orphans, other manifests'): only
    # the instances a completed run there asked for must be on its disk. Lockfile -> keys.
    synced: dict[Path, set[str]] = field(default_factory=dict)

    # -- setup -----------------------------------------------------------------

    @classmethod
    def create(cls, sim: SharedSim) -> World:
        """A fresh project in a temporary folder."""
        base = Path(tempfile.mkdtemp(prefix="imgspec-journey-"))
        root = base / "project"
        (root / "manifests").mkdir(parents=True)
        (root / "outputs").mkdir()
        (base / "elsewhere").mkdir()
        world = cls(sim=sim, root=root, elsewhere=base / "elsewhere")
        world.write_manifest()
        (root / "manifests" / "NOTES.md").write_text("the user's own notes\n")
        (root / "outputs" / "KEEP.txt").write_text("the user's own file\n")
        world.start = sim.charges()
        return world

    def close(self) -> None:
        """Remove the project."""
        self.sim.set_faults({}, 0)
        shutil.rmtree(self.root.parent, ignore_errors=True)

    @property
    def manifest(self) -> Path:
        """The manifest's absolute path."""
        return self.root / "manifests" / f"{NAME}.yaml"

    @property
    def lock_path(self) -> Path:
        """The lockfile's absolute path."""
        return self.root / "manifests" / f"{NAME}.lock.json"

    @property
    def sim_lock_path(self) -> Path:
        """The --simulate lockfile's absolute path."""
        return self.root / "manifests" / f"{NAME}.simulate.lock.json"

    @property
    def index(self) -> Path:
        """The output folder's index.json."""
        return self.root / "outputs" / NAME / "index.json"

    def write_manifest(self) -> None:
        """Save the model as the user's manifest and CSV."""
        self.manifest.write_text(self.model.manifest_text())
        (self.root / "manifests" / "rows.csv").write_text(self.model.csv_text())

    def note(self, text: str) -> None:
        """Add a line to the journey log (one per step)."""
        self.steps += 1
        STEPS_TAKEN[0] += 1
        self.log.append(f"[{self.steps}] {text}")

    def fail(self, what: str) -> JourneyFailure:
        """An invariant failure carrying the journey so far."""
        journey = "\n".join(self.log[-25:])
        return JourneyFailure(f"{what}\n--- journey (project {self.root}) ---\n{journey}")

    def check(self, condition: bool, what: str) -> None:
        """Fail with ``what`` unless ``condition``."""
        if not condition:
            raise self.fail(what)

    # -- running imgspec -------------------------------------------------------

    def where(self, cwd: Cwd, style: PathStyle) -> tuple[Path, str]:
        """The working directory and the manifest argument a user would type there."""
        folder = {"root": self.root, "manifests": self.root / "manifests",
                  "elsewhere": self.elsewhere}[cwd]
        arg = (str(self.manifest) if style == "absolute"
               else os.path.relpath(self.manifest, folder))
        return folder, arg

    def env(self) -> dict[str, str]:
        """The subprocess environment: this checkout's code, the test key, no debug."""
        env = {k: v for k, v in os.environ.items()
               if k not in ("APIMART_BASE_URL", "IMGSPEC_DEBUG")}
        env.update(PYTHONPATH=str(ROOT), APIMART_API_KEY=KEY, PYTHONUNBUFFERED="1")
        return env

    def imgspec(self, args: list[str], cwd: Path, *, interrupt: Signal = "none",
                journal: Path | None = None, moment: str = "start") -> Outcome:
        """Run imgspec; with ``interrupt``, signal it once it is mid-run.

        ``moment``: ``start`` as soon as it journals anything new (often just before its
        first POST), ``task`` once it has journaled a task id (a task is running).
        """
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            journal_before = _file_state(journal)
            tasks_before = _journaled_tasks(journal)
            proc = subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=cwd,
                                    env=self.env(), stdout=out, stderr=err, text=True)
            try:
                marker = (journal, tasks_before) if moment == "task" else None
                if interrupt != "none" and self._wait_mid_run(proc, out, journal,
                                                              journal_before, marker):
                    proc.send_signal(signal.SIGKILL if interrupt == "kill" else signal.SIGINT)
                code = proc.wait(HANG_GUARD)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            out.seek(0)
            err.seek(0)
            outcome = Outcome(tuple(args), cwd, code, out.read(), err.read())
        self.log.append(outcome.describe())
        self.check(TRACEBACK not in outcome.out + outcome.err and outcome.code != 70,
                   f"a traceback or internal error reached the user (exit {outcome.code})")
        return outcome

    def _wait_mid_run(self, proc: subprocess.Popen[str], out: IO[str], journal: Path | None,
                      journal_before: tuple[int, int] | None,
                      task: tuple[Path | None, int] | None) -> bool:
        """Wait until the run is under way; False if it ended or has nothing to do.

        Under way: it has journaled something new (it is paying or recording), or it has
        printed its plan and is resuming (polling tasks) for a moment.
        """
        deadline = time.monotonic() + 30  # only guards against a hang
        planned_at: float | None = None
        while proc.poll() is None and time.monotonic() < deadline:
            if task is not None:
                if _journaled_tasks(task[0]) > task[1]:
                    return proc.poll() is None
            elif _file_state(journal) != journal_before:
                return proc.poll() is None
            text = os.pread(out.fileno(), 1 << 20, 0).decode(errors="replace")
            if "Nothing to do." in text:
                return False
            if planned_at is None and "Plan: " in text:
                planned_at = time.monotonic()
            if planned_at is not None and time.monotonic() - planned_at > 0.5:
                return proc.poll() is None
            time.sleep(0.01)
        return False

    # -- reading state ---------------------------------------------------------

    def lock(self, *, simulate: bool = False) -> Lockfile:
        """The lockfile with any journal folded in, as the next command would read it."""
        path = self.sim_lock_path if simulate else self.lock_path
        return current_lock(path, manifest=self.manifest.name)

    def bad_outputs(self, lock: Lockfile, lock_dir: Path) -> dict[Path, str]:
        """Outputs of done entries that are missing or differ from their sha256.

        A run stopped while it carried entries by a ``moved:`` block may have moved the
        files and not yet recorded it (docs/identity.md): such an image, found intact in
        its new job's folder, is where the next plan looks for it, and is not missing.
        """
        bad: dict[Path, str] = {}
        for key, entry in lock.entries.items():
            if entry.status != "done":
                continue
            for output in entry.outputs:
                path = Path(os.path.normpath(lock_dir / output.path))
                if not path.is_file() and self.moved_file(path, output):
                    continue
                if not path.is_file():
                    bad[path] = f"{key}: {output.path} is missing"
                elif sha256_file(path) != output.sha256:
                    bad[path] = f"{key}: {output.path} does not match its sha256"
        return bad

    def carry_damage(self) -> None:
        """An image the user damaged stays damaged when a ``moved:`` block carries its
        entry to the new job's folder (a run moves only intact images; the entry names
        the new folder, where the damaged one is not)."""
        for source, target in self.model.moved:
            self.damaged |= {p.parent.parent.with_name(target) / p.parent.name / p.name
                             for p in self.damaged if p.parent.parent.name == source}

    def moved_file(self, path: Path, output: Output) -> bool:
        """Whether a ``moved:`` block's destination job folder holds the image at ``path``."""
        job_dir = path.parent.parent
        for source, target in self.model.moved:
            if job_dir.name == source:
                there = job_dir.with_name(target) / path.parent.name / path.name
                if there.is_file() and sha256_file(there) == output.sha256:
                    return True
        return False

    def files(self) -> dict[Path, str]:
        """Every lasting file of the project, with its sha256."""
        out: dict[Path, str] = {}
        for path in self.root.rglob("*"):
            if path.is_file() and not path.name.endswith(TRANSIENT_SUFFIXES) \
                    and not path.name.startswith(".") \
                    and ".git" not in path.relative_to(self.root).parts:
                out[path] = sha256_file(path)
        return out

    def owners(self, lock: Lockfile, lock_dir: Path) -> dict[Path, str]:
        """Output folder -> the key whose images it holds."""
        return {Path(os.path.normpath(lock_dir / o.path)).parent: key
                for key, entry in lock.entries.items() for o in entry.outputs}

    def plan_json(self, cwd: Cwd = "root", style: PathStyle = "relative") -> dict[str, Any] | None:
        """``imgspec plan --json`` from the user's point of view (None if invalid)."""
        folder, arg = self.where(cwd, style)
        outcome = self.imgspec(["plan", "--json", arg], folder)
        if outcome.code == 1 and self.model.duplicates():
            return None  # refusing duplicate matrix values is a fair answer
        self.check(outcome.code == 0, f"plan exited {outcome.code} on a valid manifest")
        plan: dict[str, Any] = json.loads(outcome.out)
        keys = [item["key"] for item in plan["items"]]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        self.check(not twice, f"the plan lists an instance twice: {twice}")
        expected = self.model.instances()
        extra, lacking = sorted(set(keys) - set(expected)), sorted(set(expected) - set(keys))
        self.check(not extra and not lacking,
                   f"the plan's instances differ from the manifest's: extra {extra}, "
                   f"lacking {lacking}")
        recorded = set(self.lock().entries)
        # The plan is made against the lockfile as a ``moved:`` block leaves it: a carried
        # entry is no orphan (one the block cannot carry still is).
        # A job's move carries every entry, so one the manifest no longer describes is
        # orphaned under its new name.
        beyond = recorded - set(expected)
        pending = self.pending_moves(beyond)
        carried = {self.moved_name(k) for k in pending} - set(expected)
        self.check(beyond - pending <= set(plan["orphaned"]) <= beyond | carried,
                   f"orphaned {plan['orphaned']} but the lockfile has "
                   f"{sorted(recorded - set(expected))} beyond the manifest")
        return plan

    def lockfiles(self, root: Path | None = None) -> list[Path]:
        """The real (not ``--simulate``) lockfiles of a checkout's ``manifests/``."""
        folder = (root or self.root) / "manifests"
        return sorted(p for p in folder.glob("*.lock.json")
                      if not p.name.endswith(".simulate.lock.json"))

    def held(self, root: Path | None = None) -> set[str]:
        """Fingerprints whose paid result a checkout still has: reusable for free.

        What a user can see for themselves: a done entry of any lockfile of the project
        (one a merge superseded by its task, which the API keeps), or the ``meta.json``
        of an output folder no done entry accounts for (a pruned result whose images
        were kept), whose every image is a file with the recorded sha256, or else whose
        every image has a link that has not expired. Nothing else:
        a result whose files were damaged and whose links are not recorded must be paid
        for again, and the oracle then expects that.
        """
        root = root or self.root
        now = time.time() + 600  # a link about to expire is not counted on
        found: set[str] = set()
        known: set[Path] = set()

        def usable(images: list[tuple[Path, str, str | None, int | None]]) -> bool:
            return bool(images) and (
                all(p.is_file() and sha256_file(p) == sha for p, sha, _, _ in images)
                or all(url is not None and exp is not None and exp > now
                       for _, _, url, exp in images))

        for path in self.lockfiles(root):
            lock = current_lock(path, manifest=path.name.replace(".lock.json", ".yaml"))
            for entry in lock.entries.values():
                if entry.status != "done":
                    continue
                if not entry.outputs and entry.task_id is not None:
                    # A merge kept the loser's task, not its images (``KEY#superseded:``):
                    # the API still serves that task's results, for nothing.
                    found.add(entry.fingerprint)
                    continue
                images = [(Path(os.path.normpath(path.parent / o.path)), o.sha256, o.url,
                           o.expires_at) for o in entry.outputs]
                known.update(p.parent for p, _, _, _ in images)
                if usable(images):
                    found.add(entry.fingerprint)
        for meta_path in (root / "outputs").glob("*/*/*/meta.json"):
            if meta_path.parent in known or meta_path.parents[2].name.endswith(".simulate"):
                continue
            try:
                meta = json.loads(meta_path.read_text())
                images = [(meta_path.parent / i["file"], i["sha256"], i.get("url"),
                           i.get("expires_at")) for i in meta["images"]]
            except (ValueError, KeyError, TypeError):
                continue
            if usable(images):
                found.add(meta["fingerprint"])
        return found

    def spend_of(self, root: Path) -> Decimal:
        """The spend a checkout's lockfiles record: entries' charges and retired history."""
        return sum((current_lock(path, manifest=path.name.replace(".lock.json", ".yaml"))
                    .charged for path in self.lockfiles(root)), Decimal(0))

    def recorded_spend(self) -> Decimal:
        """What the project and its clones record as spent, shared history counted once."""
        return self.spend_of(self.root) + sum(
            (self.spend_of(c) - self.clone_base[c] for c in self.clones), Decimal(0))

    def check_money(self) -> None:
        """The account paid exactly what the lockfiles on it record, no more, no less.

        After a killed or Ctrl-C'd run, a task may have been charged that no lockfile
        records yet (the reply never reached the journal), or refunded after its entry
        recorded the charge (it failed after the kill): the next run that asks for it
        settles the record. Until then only the direction a user could not explain is
        refused: more spend recorded than the account paid plus what is still in flight.
        """
        assert self.start is not None
        now = self.sim.charges()
        paid = now.cost_since(self.start)
        recorded = self.recorded_spend()
        if not self.interrupted:
            self.check(recorded == paid, f"the lockfiles record ¥{recorded} spent; the "
                       f"account paid ¥{paid} for this project")
        else:
            gross = now.gross_since(self.start)
            self.check(recorded <= gross, f"the lockfiles record ¥{recorded} spent; the "
                       f"account was charged ¥{gross} for this project, refunds aside")

    # -- invariants after every step -----------------------------------------------

    def check_always(self) -> None:
        """Done entries have their files (unless the user damaged them); user files stay."""
        self.carry_damage()
        for simulate in (False, True):
            path = self.sim_lock_path if simulate else self.lock_path
            bad = self.bad_outputs(self.lock(simulate=simulate), path.parent)
            if not simulate:
                bad = {p: why for p, why in bad.items() if p not in self.damaged}
            self.check(not bad, "a lock entry marked done lacks its files: "
                       + "; ".join(sorted(bad.values())))
        for root in (self.root, *self.clones):
            for path in self.lockfiles(root):
                if path == self.lock_path:
                    continue
                lock = current_lock(path, manifest=path.name.replace(".lock.json", ".yaml"))
                if root != self.root:
                    fetched = self.synced.get(path, set())
                    lock = replace(lock, entries={k: e for k, e in lock.entries.items()
                                                  if k in fetched})
                bad = {p: why for p, why in self.bad_outputs(lock, path.parent).items()
                       if p not in self.damaged}
                self.check(not bad, f"a lock entry of {path.name} marked done lacks its "
                           "files: " + "; ".join(sorted(bad.values())))
        for own in (self.manifest, self.root / "manifests" / "rows.csv",
                    self.root / "manifests" / "NOTES.md", self.root / "outputs" / "KEEP.txt"):
            self.check(own.is_file(), f"the user's file {own} was deleted")
        self.check_money()

    def check_kept(self, before: Mapping[Path, str], *, may_go: set[Path],
                   may_go_dirs: set[Path]) -> None:
        """Nothing the user did not ask to remove has gone."""
        gone = [p for p in before if not p.exists() and p not in may_go
                and p.parent not in may_go_dirs]
        self.check(not gone, "files the user did not ask to remove were deleted: "
                   + ", ".join(str(p.relative_to(self.root)) for p in sorted(gone)))

    # -- the user's actions ----------------------------------------------------------

    def damage(self, index: int, how: str) -> None:
        """Delete or truncate one recorded output image."""
        lock = self.lock()
        outputs = sorted({Path(os.path.normpath(self.lock_path.parent / o.path))
                          for e in lock.entries.values() if e.status == "done"
                          for o in e.outputs} - self.damaged)
        outputs = [p for p in outputs if p.is_file()]
        if not outputs:
            self.note(f"{how} an output: there is none")
            return
        target = outputs[index % len(outputs)]
        if how == "delete":
            target.unlink()
        else:
            data = target.read_bytes()
            target.write_bytes(data[: len(data) // 2])
        self.damaged.add(target)
        if how == "truncate":  # a copy made as a hard link is the same file, damaged too
            inode = target.stat().st_ino
            self.damaged |= {p for p in (self.root / "outputs").rglob("*")
                             if p.is_file() and p.stat().st_ino == inode}
        self.note(f"{how} {target.relative_to(self.root)}")

    # -- refactors: copies, moves, clones ------------------------------------------------

    def run_other(self, root: Path, manifest: str, label: str) -> None:
        """``imgspec run`` of another manifest or checkout of the project, no faults.

        Owed: the instances whose request the checkout does not hold a paid result of
        (``held``): the plan prices exactly those, and the run pays at most that (a
        request some killed run left charged is answered as a replay, for nothing).
        """
        self.note(f"run {label}")
        planned = self.imgspec(["plan", "--json", manifest], root)
        if planned.code == 1 and (self.clone_dups.get(root, False) if root != self.root
                                  else self.model.duplicates()):
            return
        self.check(planned.code == 0, f"plan of {label} exited {planned.code}")
        items = json.loads(planned.out)["items"]
        held = self.held(root)
        files_before = self.files()
        path = root / "manifests" / manifest.removeprefix("manifests/").replace(
            ".yaml", ".lock.json")
        lock = current_lock(path, manifest=path.name.replace(".lock.json", ".yaml"))
        # A changed instance's old images are replaced; anything else must stay.
        redone = {i["key"] for i in items if i["status"] != "up-to-date"}
        replaced = {d for d, key in self.owners(lock, path.parent).items() if key in redone}
        before = self.sim.charges()
        owed = [i for i in items if i["fingerprint"] not in held
                and i["status"] != "up-to-date"]
        for item in owed:
            self.allowed[item["fingerprint"]] += 1
        outcome = self.imgspec(["run", manifest, "--base-url", self.sim.base_url, "--yes"],
                               root)
        after = self.sim.charges()
        self.check(outcome.code == 0, f"run of {label} exited {outcome.code}")
        m = PLAN_LINE.search(outcome.out)
        plan_images = int(m.group(2)) if m else 0
        if not any(i["status"] == "resume" for i in items):
            owed_images = sum(i["n"] for i in owed)
            self.check(plan_images == owed_images,
                       f"{label}: the plan will pay for {plan_images} images; owed are "
                       f"{owed_images} ({sorted(i['key'] for i in owed)})")
        paid = after.new_images(before)
        self.check(paid <= plan_images,
                   f"{label}: the run charged {paid} images; its plan said {plan_images}")
        self.check_charges(after)
        lock = current_lock(path, manifest=path.name.replace(".lock.json", ".yaml"))
        for item in items:
            entry = lock.entries.get(item["key"])
            self.check(entry is not None and entry.status == "done",
                       f"{label} exited 0 but {item['key']} is not done")
        self.synced[path] = {i["key"] for i in items}
        if root == self.root:
            self.check_kept(files_before, may_go=set(), may_go_dirs=replaced)

    def copy_job(self) -> None:
        """Copy the matrix job, as it is now, into a second manifest of the project."""
        copy = self.root / "manifests" / "k.yaml"
        copy.write_text(self.model.copy_text("k"))
        self.note(f"copy job {self.model.a_name} into manifests/k.yaml")
        self.run_other(self.root, "manifests/k.yaml", "manifests/k.yaml")

    def clone(self) -> Path:
        """A second checkout on the same account: the project's files, no outputs."""
        target = self.root.parent / f"clone{len(self.clones) + 1}"
        shutil.copytree(self.root, target, ignore=shutil.ignore_patterns(
            "outputs", "*.journal", "*.guard", "*.tmp", "*.part", ".*"))
        (target / "outputs").mkdir()
        self.clones.append(target)
        self.clone_base[target] = self.spend_of(target)
        self.clone_dups[target] = self.model.duplicates()
        self.note(f"clone the project into {target.name} (lockfiles, no outputs)")
        return target

    def run_clone(self, fresh: bool) -> None:
        """Run the manifest in a clone (a new one, up to two, or the last one)."""
        target = self.clone() if (fresh and len(self.clones) < 2) or not self.clones \
            else self.clones[-1]
        self.run_other(target, f"manifests/{NAME}.yaml", f"in {target.name}")

    def pending_moves(self, keys: set[str]) -> set[str]:
        """The keys a ``moved:`` block of the manifest may carry to another name."""
        froms = {a for a, _ in self.model.moved}
        return {k for k in keys if k.split("@", 1)[0] in froms}

    def moved_name(self, key: str) -> str:
        """The key a pending ``moved:`` block gives ``key``."""
        job, _, rest = key.partition("@")
        target = dict(self.model.moved).get(job, job)
        return f"{target}@{rest}" if rest else target

    def lock_mv(self, old: str, new: str, dry_run: bool) -> None:
        """``imgspec lock mv``: entries move with their files and spend, or it refuses."""
        args = ["lock", "mv", str(self.manifest), old, new, *(["--dry-run"] if dry_run else [])]
        self.note(f"lock mv {old} {new}{' --dry-run' if dry_run else ''}")
        before = self.lock()
        spend = self.spend_of(self.root)
        outcome = self.imgspec(args, self.root)
        after = self.lock()
        moving = {k: new + k[len(old):] for k in before.entries if k.split("@")[0] == old}
        clash = {v for v in moving.values() if v in before.entries}
        if dry_run or not moving or clash:
            self.check(outcome.code == (0 if moving and not clash else 2),
                       f"lock mv exited {outcome.code} (entries to move: {len(moving)}, "
                       f"destinations taken: {sorted(clash)})")
            self.check(after.entries == before.entries, "lock mv changed the lockfile "
                       "although it had nothing to do, refused or was a dry run")
            return
        self.check(outcome.code == 0, f"lock mv exited {outcome.code}")
        self.check(set(after.entries) == set(before.entries) - set(moving)
                   | set(moving.values()), f"lock mv left {sorted(after.entries)}")
        for src, dst in moving.items():
            self.check(after.entries[dst].fingerprint == before.entries[src].fingerprint,
                       f"lock mv changed the request recorded for {dst}")
            if src in self.delivered:
                self.delivered[dst] = self.delivered.pop(src)
            if src in self.epoch:
                self.epoch[dst] = self.epoch.pop(src)
                self.epoch_start[dst] = self.epoch_start.pop(src)
            gone = {Path(os.path.normpath(self.lock_path.parent / o.path))
                    for o in before.entries[src].outputs}
            if gone & self.damaged:  # a damaged image stays behind: the new entry lacks it
                self.damaged |= {Path(os.path.normpath(self.lock_path.parent / o.path))
                                 for o in after.entries[dst].outputs}
        self.check(self.spend_of(self.root) == spend, "lock mv changed the recorded spend")

    def delete_index(self) -> None:
        """Delete outputs/<name>/index.json."""
        existed = self.index.exists()
        self.index.unlink(missing_ok=True)
        self.note(f"delete {self.index.relative_to(self.root)} (existed: {existed})")

    # -- commands --------------------------------------------------------------

    def selection(self, plan: Mapping[str, Any], how: str, arg: str) -> set[str]:
        """The keys a run with this filter should work on."""
        items = plan["items"]
        if how == "job":
            return {i["key"] for i in items if i["job"] == arg}
        if how == "where":
            axis, _, value = arg.partition("=")
            return {i["key"] for i in items if str(i["matrix"].get(axis)) == value}
        if how == "only-failed":
            return {i["key"] for i in items if i["status"] in ("retry", "resume")}
        return {i["key"] for i in items}

    def run(self, *, cwd: Cwd, style: PathStyle, how: str, pick: int, faults: bool,
            fault_seed: int, concurrency: int, interrupt: Signal,
            moment: str = "start", rehash: bool = False) -> None:
        """``imgspec run`` against the simulator, and everything that must hold after it
        (``rehash``: with ``--rehash``, every image's sha256 checked, not only its size)."""
        plan = self.plan_json(cwd, style)
        folder, arg = self.where(cwd, style)
        args = ["run", arg, "--base-url", self.sim.base_url, "--yes",
                "--concurrency", str(concurrency), *(["--rehash"] if rehash else [])]
        filter_arg = ""
        unknown_where = False
        if how == "job":
            filter_arg = self.model.jobs()[pick % len(self.model.jobs())]
            args += ["--job", filter_arg]
        elif how == "where":
            pairs = self.model.axis_values()
            axis, value = pairs[pick % len(pairs)]
            filter_arg = f"{axis}={value}"
            args += ["--where", filter_arg]
        elif how == "where-nothing":
            unknown_where = True
            args += ["--where", "season=monsoon" if pick % 2 else "weather=rain"]
        elif how == "only-failed":
            args += ["--only-failed"]
        self.note(f"run from {cwd} ({style} path) {how} {filter_arg} faults={faults} "
                  f"concurrency={concurrency} interrupt={interrupt} at {moment}")
        lock_before = self.lock()
        files_before = self.files()
        owners = self.owners(lock_before, self.lock_path.parent)
        held = self.held()
        before = self.sim.charges()
        self.interrupted |= interrupt != "none"
        if faults:
            self.sim.set_faults(FAULTS, fault_seed)
        try:
            outcome = self.imgspec(args, folder, interrupt=interrupt, moment=moment,
                                   journal=self.lock_path.with_name(f"{NAME}.lock.journal"))
        finally:
            if faults:
                self.sim.set_faults({}, 0)
        after = self.sim.charges()
        self.check(not after.untracked, "a task was created without an Idempotency-Key")

        # A signal may land before the run gets as far as refusing: 130 or death by SIGKILL
        # is then the outcome, whatever the run would have done. Ctrl-C before Python has
        # handed SIGINT to imgspec ends it by the signal: the shell says 130 all the same.
        stopped = {"none": set(), "kill": {-signal.SIGKILL},
                   "int": {130, -signal.SIGINT}}[interrupt]
        if plan is None:  # duplicate matrix values, refused as invalid: refused by run too
            self.check(outcome.code in {1} | stopped,
                       f"plan refused the manifest, run exited {outcome.code}")
            self.check(after.new_images(before) == 0, "an invalid manifest was charged for")
            self.after_run(set(), {}, files_before, owners, set())
            return
        if unknown_where:
            self.check(outcome.code in {2} | stopped, f"--where matching nothing exited "
                       f"{outcome.code}, not 2 (a usage error)")
            self.check(after.new_images(before) == 0, "a run that matched nothing paid")
            self.after_run(set(), {}, files_before, owners, set())
            return

        selected = self.selection(plan, how, filter_arg)
        fps = {i["key"]: i["fingerprint"] for i in plan["items"]}
        items = {i["key"]: i for i in plan["items"]}
        # The user asked for these versions: each fingerprint may be paid once per version,
        # unless the project still holds a paid result of that very request (under any
        # name, in any lockfile or kept output folder): that one is owed nothing at all.
        for key in selected:
            if self.epoch.get(key) != fps[key]:
                self.epoch[key] = fps[key]
                self.epoch_start[key] = before
                if fps[key] not in held:
                    self.allowed[fps[key]] += 1
        # A changed instance's recorded images are replaced: those of a version delivered
        # before, and those its lock entry names although they were never delivered whole
        # (an image the user damaged, left in the old job's folder by a ``moved:`` block).
        changed = {k for k in selected if self.delivered.get(k) not in (None, fps[k])
                   or ((e := lock_before.entries.get(k)) is not None and e.outputs
                       and e.fingerprint != fps[k])}

        # What a careful user expects to pay: a version not yet delivered, not already
        # charged for, and not held by the project under another name (a rename, a copy,
        # a pruned entry whose images were kept). Damaged or deleted images of a delivered
        # version cost nothing.
        in_flight = {k for k in selected if items[k]["status"] == "resume"}
        owed = {k for k in selected if self.delivered.get(k) != fps[k]
                and fps[k] not in held
                and not before.live(fps[k], since=self.epoch_start[k])}
        owed_images = sum(items[k]["n"] for k in owed)
        paid = after.new_images(before)
        m = PLAN_LINE.search(outcome.out)
        plan_images = int(m.group(2)) if m else 0
        expected_codes = ({0, 4} if faults else {0}) | stopped
        self.check(outcome.code in expected_codes,
                   f"run exited {outcome.code}; expected one of {sorted(expected_codes)}")
        # Interrupted before it printed its plan, a run can only have resumed its tasks.
        self.check(m is not None or interrupt != "none", "the run printed no plan")
        self.check(paid <= plan_images + sum(items[k]["n"] for k in in_flight),
                   f"the run charged {paid} images; its plan said {plan_images}")
        if m is not None and how in ("job", "where"):
            skipped = SKIPPED.search(m.group(0))
            left_out = int(skipped.group(1)) if skipped else 0
            self.check(left_out == len(items) - len(selected),
                       f"{how} {filter_arg} should leave {len(items) - len(selected)} "
                       f"instance(s) out; the run's plan says: {m.group(0)}")
        # What --only-failed takes is its own call; so is the price of resuming.
        if m is not None and not in_flight and how != "only-failed":
            self.check(plan_images == owed_images,
                       f"the plan will pay for {plan_images} images; owed are {owed_images} "
                       f"({sorted(owed)})")
        if outcome.code == 0 and not faults:
            # A version charged before under the same key (its entry pruned, its job
            # renamed away and back) is replayed by its Idempotency-Key: the API answers
            # with the task it already made, for nothing. The plan cannot know how long
            # the API keeps keys, so it prices it; the run may pay less, never more.
            replayed = sum(items[k]["n"] for k in owed if before.live(fps[k]))
            self.check(paid >= plan_images - replayed,
                       f"the run said it would pay for {plan_images} images, charged {paid}")
        self.check_charges(after)
        # An image the user damaged that a selected entry names goes when the run repairs
        # it elsewhere: a move left it in the old job's folder, the repair downloads the
        # recorded image into the instance's folder and drops the damaged copy.
        repaired = {p for key, entry in lock_before.entries.items()
                    if key in selected or self.moved_name(key) in selected
                    for o in entry.outputs
                    if (p := Path(os.path.normpath(self.lock_path.parent / o.path)))
                    in self.damaged}
        self.after_run(selected, fps, files_before, owners, changed, repaired)
        if outcome.code == 4:
            lock = self.lock()
            unfinished = [k for k in selected
                          if k not in lock.entries or lock.entries[k].status != "done"]
            self.check(bool(unfinished), "run exited 4 (items failed) but all it did is done")
        if outcome.code == 0:
            lock = self.lock()
            bad = self.bad_outputs(lock, self.lock_path.parent)
            for key in sorted(selected):
                entry = lock.entries.get(key)
                self.check(entry is not None and entry.status == "done",
                           f"run exited 0 but {key} is "
                           f"{'absent' if entry is None else entry.status}")
                assert entry is not None
                broken = [why for p, why in bad.items() if why.startswith(key + ":")]
                self.check(not broken, f"run exited 0 but left damaged outputs: {broken}")
            self.check(self.index.is_file(), "run exited 0 and left no index.json")

    def check_charges(self, now: Charges) -> None:
        """No version of an instance was paid for twice."""
        assert self.start is not None
        for fp, count in self.allowed.items():
            live = now.live(fp, since=self.start)
            self.check(len(live) <= count,
                       f"request {fp[:19]} was charged {len(live)} times; the user asked "
                       f"for it {count} time(s)")
        known = {fp.removeprefix("sha256:") for fp in self.allowed}
        stray = {d for d, tasks in now.live_by_digest.items()
                 if d not in known and tasks - self.start.all_tasks()}
        self.check(not stray, f"charged for requests no instance asked for: {sorted(stray)}")

    def after_run(self, selected: set[str], fps: Mapping[str, str],
                  files_before: Mapping[Path, str], owners: Mapping[Path, str],
                  changed: set[str], repaired: set[Path] | None = None) -> None:
        """Record what was delivered; check nothing else was removed (``repaired``:
        damaged images the run may replace by intact ones elsewhere)."""
        lock = self.lock()
        bad = self.bad_outputs(lock, self.lock_path.parent)
        for key, entry in lock.entries.items():
            paths = [Path(os.path.normpath(self.lock_path.parent / o.path))
                     for o in entry.outputs]
            if entry.status == "done" and not any(p in bad for p in paths):
                self.delivered[key] = entry.fingerprint
                # Only an image that is there again is no longer the user's damage: one a
                # ``moved:`` block excuses (``moved_file``) is still missing where it is.
                self.damaged -= {p for p in paths if p.is_file()}
        # A changed instance's old images are replaced, a moved one's move to its new
        # folder; anything else must stay.
        replaced = {d for d, key in owners.items()
                    if key in changed or key in self.pending_moves({key})}
        self.check_kept(files_before, may_go=repaired or set(), may_go_dirs=replaced)

    def run_simulate(self, *, cwd: Cwd, style: PathStyle, interrupt: bool) -> None:
        """The ``--simulate`` demo, optionally with Ctrl-C mid-run."""
        folder, arg = self.where(cwd, style)
        self.note(f"run --simulate from {cwd} ({style} path), Ctrl-C: {interrupt}")
        files_before = self.files()
        # A ``moved:`` block carries the demo's entries and images to their new folders.
        moving = {d for d, key in self.owners(self.lock(simulate=True),
                                              self.sim_lock_path.parent).items()
                  if self.pending_moves({key})}
        outcome = self.imgspec(
            ["run", "--simulate", arg, "--concurrency", "4"], folder,
            interrupt="int" if interrupt else "none", moment="task",
            journal=self.sim_lock_path.with_name(f"{NAME}.simulate.lock.journal"))
        if self.model.duplicates() and outcome.code == 1:
            return
        if interrupt:
            self.check(outcome.code in (0, 130, -signal.SIGINT),
                       f"Ctrl-C'd demo exited {outcome.code}")
        else:
            self.check(outcome.code == 0, f"the --simulate demo exited {outcome.code}, not 0")
            lock = self.lock(simulate=True)
            for key in self.model.instances():
                entry = lock.entries.get(key)
                self.check(entry is not None and entry.status == "done",
                           f"the demo exited 0 but {key} is not done")
        # Only the demo's own output folder may change; its images are replaced in place.
        demo = self.root / "outputs" / f"{NAME}.simulate"
        owners = self.owners(self.lock(simulate=True), self.sim_lock_path.parent)
        self.check_kept({p: s for p, s in files_before.items() if demo not in p.parents},
                        may_go=set(), may_go_dirs=set())
        self.check_kept({p: s for p, s in files_before.items() if demo in p.parents},
                        may_go=set(), may_go_dirs=set(owners) | moving)

    def prune(self, *, cwd: Cwd, style: PathStyle) -> None:
        """``imgspec prune``: orphaned entries go, nothing else."""
        folder, arg = self.where(cwd, style)
        self.note(f"prune from {cwd} ({style} path)")
        lock_before = self.lock()
        files_before = self.files()
        outcome = self.imgspec(["prune", arg], folder)
        if outcome.code == 1 and self.model.duplicates():
            return
        self.check(outcome.code == 0, f"prune exited {outcome.code}")
        expected = set(self.model.instances())
        orphaned = set(lock_before.entries) - expected
        lock = self.lock()
        # Orphans a ``moved:`` block has yet to carry may be kept for the next run, or
        # carried now.
        kept = set(lock_before.entries) - orphaned
        pending = self.pending_moves(orphaned)
        self.check(kept <= set(lock.entries)
                   <= kept | pending | {self.moved_name(k) for k in pending},
                   f"prune left {sorted(set(lock.entries) - expected)} and dropped "
                   f"{sorted(set(lock_before.entries) - set(lock.entries) - orphaned)}")
        orphaned = set(lock_before.entries) - set(lock.entries)
        for key in orphaned:  # forgotten: asking for it again is a new version
            self.delivered.pop(key, None)
            self.epoch.pop(key, None)
        dirs = {d for d, key in self.owners(lock_before, self.lock_path.parent).items()
                if key in orphaned}
        self.check_kept(files_before, may_go=set(), may_go_dirs=dirs)

    def verify(self, *, cwd: Cwd, style: PathStyle) -> None:
        """``imgspec verify`` agrees with our own hashing."""
        folder, arg = self.where(cwd, style)
        self.note(f"verify from {cwd} ({style} path)")
        files_before = self.files()
        outcome = self.imgspec(["verify", arg], folder)
        if outcome.code == 1 and self.model.duplicates():
            return
        bad = self.bad_outputs(self.lock(), self.lock_path.parent)
        # A deleted index.json is the verifier's to report or not; a damaged image is not.
        expected = {1} if bad else {0, 1} if not self.index.exists() else {0}
        self.check(outcome.code in expected,
                   f"verify exited {outcome.code} with {len(bad)} damaged output(s)")
        self.check_kept(files_before, may_go=set(), may_go_dirs=set())


def _file_state(path: Path | None) -> tuple[int, int] | None:
    """A file's (inode, size), None if absent: tells whether it was written since."""
    try:
        stat = path.stat() if path is not None else None
    except FileNotFoundError:
        return None
    return None if stat is None else (stat.st_ino, stat.st_size)


def _journaled_tasks(journal: Path | None) -> int:
    """How many journal records carry a task id (a task the run knows is running)."""
    try:
        return journal.read_text(errors="replace").count('"task_id":"') if journal else 0
    except FileNotFoundError:
        return 0


@contextlib.contextmanager
def shared_sim() -> Iterator[SharedSim]:
    """A simulator for a whole test run."""
    sim = SharedSim()
    try:
        yield sim
    finally:
        sim.stop()
