"""Random user journeys through the real `imgspec` command line never break its promises.

A hypothesis state machine edits a small project the way people do (prompts, matrix
values, CSV rows, jobs added, removed and renamed, outputs and the index deleted or
damaged), refactors it (renames with a ``moved:`` block or ``imgspec lock mv``, a job
copied into a second manifest, clones of the project on the same account, a git merge
in one checkout where both branches were run), runs
`imgspec` in subprocesses from different folders with relative and absolute
paths, with filters, faults, SIGKILL and Ctrl-C, and after every step checks what a careful
user expects (see ``world.py``).

CI runs a fixed, derandomized set of journeys (no example database), so it is
deterministic. By hand, ``IMGSPEC_JOURNEY_EXAMPLES`` and ``IMGSPEC_JOURNEY_STEPS`` raise the
numbers and draw fresh journeys (``--hypothesis-seed=N`` repeats a draw), and
``IMGSPEC_JOURNEY_SHRINK=1`` shrinks a failure to a minimal journey:

    IMGSPEC_JOURNEY_EXAMPLES=100 IMGSPEC_JOURNEY_STEPS=20 python3 -m pytest \
        tests/journeys/test_journeys.py -q -p no:cacheprovider

``bench/journeys.py`` runs journeys until a number of steps, keeping every failure.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from tests.journeys import branches
from tests.journeys.world import (
    CWDS,
    PATH_STYLES,
    ROWS,
    SEASONS,
    SHOPS,
    SharedSim,
    World,
    shared_sim,
)

BY_HAND = "IMGSPEC_JOURNEY_EXAMPLES" in os.environ
EXAMPLES = int(os.environ.get("IMGSPEC_JOURNEY_EXAMPLES", "6"))
STEPS = int(os.environ.get("IMGSPEC_JOURNEY_STEPS", "16"))
# Shrinking replays journeys of subprocesses for minutes; CI prints the whole (short)
# journey instead, and IMGSPEC_JOURNEY_SHRINK=1 asks for the minimal one by hand.
SHRINK = os.environ.get("IMGSPEC_JOURNEY_SHRINK") == "1"

cwds = st.sampled_from(CWDS)
styles = st.sampled_from(PATH_STYLES)
filters = st.sampled_from(["all", "all", "all", "job", "where", "where-nothing", "only-failed"])
interrupts = st.sampled_from(["none", "none", "none", "kill", "int"])
moments = st.sampled_from(["start", "task"])
picks = st.integers(0, 11)

# Typed once here: older hypothesis releases leave it unannotated, newer ones do not.
run_machine: Callable[..., None] = run_state_machine_as_test


def journey_settings() -> settings:
    """CI: fixed and derandomized; by hand: as many fresh journeys as asked for."""
    return settings(
        max_examples=EXAMPLES,
        stateful_step_count=STEPS,
        deadline=None,
        database=None,
        derandomize=not BY_HAND,
        print_blob=True,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate, *([Phase.shrink] if SHRINK else [])],
    )


class Journey(RuleBasedStateMachine):
    """One user's afternoon with a project."""

    sim: SharedSim | None = None

    def __init__(self) -> None:
        super().__init__()
        assert Journey.sim is not None, "start the shared simulator first"
        self.world = World.create(Journey.sim)

    def teardown(self) -> None:
        """Remove the project."""
        self.world.close()

    @initialize(cwd=cwds, style=styles)
    def first_run(self, cwd: str, style: str) -> None:
        """Start the way the README does: one full run."""
        self.world.run(cwd=cwd, style=style, how="all", pick=0, faults=False,
                       fault_seed=0, concurrency=4, interrupt="none")

    # -- edits -------------------------------------------------------------------

    @rule(job=st.sampled_from(["a", "b", "c"]))
    def edit_prompt(self, job: str) -> None:
        """Reword a job's prompt."""
        m = self.world.model
        if job == "a":
            m.a_prompt += 1
        elif job == "b":
            m.b_prompt += 1
        else:
            m.c_prompt += 1
        self.world.write_manifest()
        self.world.note(f"edit the prompt of {job}")

    @rule()
    def edit_n(self) -> None:
        """Ask for one image instead of two, or two instead of one."""
        m = self.world.model
        m.a_n = 3 - m.a_n
        self.world.write_manifest()
        self.world.note(f"set n of {m.a_name} to {m.a_n}")

    @rule(axis=st.sampled_from(["shop", "season"]), pick=picks,
          how=st.sampled_from(["add", "remove", "replace", "duplicate"]))
    def edit_matrix(self, axis: str, pick: int, how: str) -> None:
        """Add, remove, replace or (by a slip) repeat a matrix value."""
        m = self.world.model
        values, pool = (m.shops, SHOPS) if axis == "shop" else (m.seasons, SEASONS)
        unused = [v for v in pool if v not in values]
        if how == "add" and unused and len(values) < 3:
            values.append(unused[pick % len(unused)])
        elif how == "remove" and len(values) > 1:
            values.pop(pick % len(values))
        elif how == "replace" and unused:
            values[pick % len(values)] = unused[pick % len(unused)]
        elif how == "duplicate" and len(values) < 3:
            values.append(values[pick % len(values)])
        else:
            self.world.note(f"{how} a value of {axis}: not possible, nothing done")
            return
        self.world.write_manifest()
        self.world.note(f"{how} a value of {axis}: now {values}")

    @rule(pick=picks, add=st.booleans())
    def edit_csv(self, pick: int, add: bool) -> None:
        """Add or remove a catalogue row."""
        rows = self.world.model.rows
        unused = [r for r in ROWS if r not in rows]
        if add and unused and len(rows) < 3:
            rows.append(unused[pick % len(unused)])
        elif not add and len(rows) > 1:
            rows.pop(pick % len(rows))
        else:
            self.world.note("edit rows.csv: not possible, nothing done")
            return
        self.world.write_manifest()
        self.world.note(f"{'add' if add else 'remove'} a CSV row: now {rows}")

    @rule()
    def toggle_job(self) -> None:
        """Add or remove job c."""
        m = self.world.model
        m.c_present = not m.c_present
        self.world.write_manifest()
        self.world.note(f"{'add' if m.c_present else 'remove'} job c")

    @rule()
    def rename_job(self) -> None:
        """Rename the matrix job (a <-> shops), dropping any ``moved:`` block."""
        m = self.world.model
        m.a_name = "shops" if m.a_name == "a" else "a"
        m.moved = []
        self.world.write_manifest()
        self.world.note(f"rename the matrix job to {m.a_name}")

    @rule()
    def rename_with_moved(self) -> None:
        """Rename the matrix job and say so in a ``moved:`` block."""
        m = self.world.model
        old, m.a_name = m.a_name, "shops" if m.a_name == "a" else "a"
        m.moved = [(old, m.a_name)]
        self.world.write_manifest()
        self.world.note(f"rename the matrix job to {m.a_name}, with moved: from {old}")

    @rule(dry_run=st.booleans())
    def rename_by_lock_mv(self, dry_run: bool) -> None:
        """Rename the matrix job and ``imgspec lock mv`` its entries (or only look)."""
        m = self.world.model
        old, m.a_name = m.a_name, "shops" if m.a_name == "a" else "a"
        m.moved = []
        self.world.write_manifest()
        self.world.lock_mv(old, m.a_name, dry_run)

    @rule()
    def copy_job(self) -> None:
        """Copy the matrix job into a second manifest of the project and run it."""
        self.world.copy_job()

    @rule(fresh=st.booleans())
    def run_clone(self, fresh: bool) -> None:
        """Run the manifest in another checkout (lockfiles, no outputs) on the account."""
        self.world.run_clone(fresh)

    @rule(job=st.sampled_from(["a", "b"]))
    def merge_branches(self, job: str) -> None:
        """In this checkout, a side branch rewords a prompt and runs, main runs, main
        merges the side and runs again: the merge pays nothing."""
        branches.merge_branches(self.world, job)

    @rule(pick=picks, how=st.sampled_from(["delete", "truncate"]))
    def damage_output(self, pick: int, how: str) -> None:
        """Delete or truncate an output image."""
        self.world.damage(pick, how)

    @rule()
    def delete_index(self) -> None:
        """Delete index.json."""
        self.world.delete_index()

    # -- commands ----------------------------------------------------------------

    @rule(cwd=cwds, style=styles, how=filters, pick=picks, faults=st.booleans(),
          fault_seed=st.integers(0, 2**16), concurrency=st.sampled_from([1, 4]),
          interrupt=interrupts, moment=moments)
    def run(self, cwd: str, style: str, how: str, pick: int, faults: bool, fault_seed: int,
            concurrency: int, interrupt: str, moment: str) -> None:
        """imgspec run against the simulator, SIGKILL or Ctrl-C at the start or mid-task."""
        self.world.run(cwd=cwd, style=style, how=how, pick=pick,
                       faults=faults, fault_seed=fault_seed, concurrency=concurrency,
                       interrupt=interrupt, moment=moment)

    @rule(cwd=cwds, style=styles)
    def run_again(self, cwd: str, style: str) -> None:
        """A plain rerun, the way a user finishes off."""
        self.world.run(cwd=cwd, style=style, how="all", pick=0, faults=False,
                       fault_seed=0, concurrency=4, interrupt="none")

    @rule(cwd=cwds, style=styles, ctrl_c=st.booleans())
    def simulate_demo(self, cwd: str, style: str, ctrl_c: bool) -> None:
        """The --simulate demo, sometimes Ctrl-C'd."""
        self.world.run_simulate(cwd=cwd, style=style, interrupt=ctrl_c)

    @rule(cwd=cwds, style=styles)
    def plan(self, cwd: str, style: str) -> None:
        """imgspec plan --json describes the manifest's instances."""
        self.world.note(f"plan --json from {cwd} ({style} path)")
        self.world.plan_json(cwd, style)

    @rule(cwd=cwds, style=styles)
    def prune(self, cwd: str, style: str) -> None:
        """imgspec prune."""
        self.world.prune(cwd=cwd, style=style)

    @rule(cwd=cwds, style=styles)
    def verify(self, cwd: str, style: str) -> None:
        """imgspec verify."""
        self.world.verify(cwd=cwd, style=style)

    @invariant()
    def promises_hold(self) -> None:
        """Done entries have their files; the user's files are there."""
        self.world.check_always()


@pytest.fixture(scope="module")
def journey_sim() -> Iterator[SharedSim]:
    """One simulator for every journey of the run."""
    with shared_sim() as sim:
        Journey.sim = sim
        try:
            yield sim
        finally:
            Journey.sim = None


@pytest.mark.timeout(0 if BY_HAND else 300)  # a long run by hand takes what it takes
def test_user_journeys_keep_every_promise(journey_sim: SharedSim) -> None:
    """Random edit/refactor/run/kill/prune/verify journeys, clones on one account: paid
    once per request, the account's spend is what the lockfiles record, nothing lost."""
    run_machine(Journey, settings=journey_settings())
