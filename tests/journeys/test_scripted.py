"""Short fixed journeys through the real CLI, each the minimal form of a bug the random
journeys found (or a promise they check), judged by the same oracle (``world.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.journeys import branches
from tests.journeys.world import SharedSim, World, shared_sim

Step = Callable[[World], None]


@pytest.fixture(scope="module")
def sim() -> Iterator[SharedSim]:
    """One simulator for these journeys."""
    with shared_sim() as running:
        yield running


@pytest.fixture
def world(sim: SharedSim) -> Iterator[World]:
    """A fresh project."""
    w = World.create(sim)
    try:
        yield w
    finally:
        w.close()


def full_run(w: World, cwd: str = "root", style: str = "relative",
             interrupt: str = "none") -> None:
    """A plain run of everything (signalled, if asked, once a task is running)."""
    w.run(cwd=cwd, style=style, how="all", pick=0, faults=False,
          fault_seed=0, concurrency=4, interrupt=interrupt, moment="task")
    w.check_always()


def edit_prompt(w: World) -> None:
    """Reword job a's prompt."""
    w.model.a_prompt += 1
    w.write_manifest()
    w.note("edit the prompt of a")


def test_changed_prompt_relative_path_keeps_new_images(world: World) -> None:
    """A changed prompt run with a relative path from the project root keeps its new images."""
    full_run(world)
    edit_prompt(world)
    full_run(world)
    full_run(world, "elsewhere")  # and pays nothing more, wherever it is run from


def test_duplicate_matrix_value_is_paid_once(world: World) -> None:
    """`shop: [bakery, bakery, florist]` is refused or run once per distinct instance."""
    full_run(world)
    world.model.shops.append(world.model.shops[0])
    world.write_manifest()
    world.note(f"duplicate a shop: {world.model.shops}")
    full_run(world)


def test_simulate_demo_resumes_after_ctrl_c(world: World) -> None:
    """`run --simulate`, Ctrl-C mid-run, run --simulate again: it finishes (exit 0)."""
    world.run_simulate(cwd="root", style="relative", interrupt=True)
    world.check_always()
    world.run_simulate(cwd="root", style="relative", interrupt=False)
    world.check_always()


def test_deleted_index_is_rewritten(world: World) -> None:
    """A deleted index.json comes back on the next run even with nothing to do."""
    full_run(world)
    world.delete_index()
    full_run(world)


def test_truncated_output_is_repaired(world: World) -> None:
    """A truncated image is repaired by the next run (re-downloaded, nothing paid)."""
    full_run(world)
    world.damage(0, "truncate")
    world.check_always()
    full_run(world)


def test_deleted_output_is_downloaded_again_for_free(world: World) -> None:
    """A deleted image whose URL still works is downloaded again at no cost."""
    full_run(world)
    world.damage(1, "delete")
    full_run(world)


def test_sigkill_mid_run_then_rerun_pays_once(world: World) -> None:
    """SIGKILL mid-run, rerun: everything done, each instance paid once."""
    full_run(world, interrupt="kill")
    full_run(world)


@pytest.mark.parametrize("job", ["a", "b"])
def test_a_merge_of_two_branches_run_in_one_checkout_pays_nothing(world: World,
                                                                  job: str) -> None:
    """Side branch reworded and run, main run, main merges the side: the merged plan
    reuses the superseded entries' results; the ledger equals the recorded spend."""
    full_run(world)
    branches.merge_branches(world, job)
    world.check_always()
    full_run(world)  # and nothing is owed afterwards either


def test_a_changed_instance_replaces_the_damaged_image_its_move_left_behind(
        world: World) -> None:
    """A ``moved:`` block carries an entry but not its damaged image (the entry keeps naming
    it in the old job's folder); a later run of the changed instance replaces that image,
    as it replaces any changed instance's images, and removes nothing else."""
    full_run(world)
    m = world.model
    m.moved, m.a_name = [(m.a_name, "shops")], "shops"
    world.write_manifest()
    world.note("rename the matrix job to shops, with moved: from a")
    world.damage(0, "truncate")
    edit_prompt(world)
    # Nothing has failed: this run only carries the entries to their new keys.
    world.run(cwd="root", style="relative", how="only-failed", pick=0, faults=False,
              fault_seed=0, concurrency=4, interrupt="none")
    world.check_always()
    full_run(world)


def test_a_damaged_image_lock_mv_left_behind_is_replaced_by_its_repair(world: World) -> None:
    """``lock mv`` leaves an image the user damaged in the old job's folder (the entry keeps
    naming it there); the next run downloads the recorded image into the new folder and
    the damaged copy goes with the repair, nothing else."""
    full_run(world)
    world.damage(0, "truncate")
    m = world.model
    m.a_name = "shops"
    world.write_manifest()
    world.lock_mv("a", "shops", dry_run=False)
    world.check_always()
    full_run(world)


def test_an_image_deleted_from_an_entry_a_move_cannot_carry_stays_deleted(
        world: World) -> None:
    """A ``moved:`` block onto keys that already have entries carries nothing; an image the
    user deleted from such an orphan stays the user's deletion after runs, whatever a copy
    of it in the new job's folder, and when the block is gone."""
    full_run(world)
    world.damage(1, "delete")
    m = world.model
    m.a_name = "shops"
    world.write_manifest()
    world.note("rename the matrix job to shops")
    full_run(world)  # reused from the a@ entries: copied, the deleted image by its link
    m.moved = [("a", "shops")]
    world.write_manifest()
    world.note("add moved: from a to shops (every destination has its entry)")
    full_run(world)
    m.a_name, m.moved = "a", []
    world.write_manifest()
    world.note("rename the matrix job back to a, dropping moved:")
    world.check_always()
