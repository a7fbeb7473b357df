"""The journey's git move: a merge in one checkout where both branches were run.

The project becomes a git repository the first time (``imgspec init`` registers the
lockfile merge driver, ``outputs/`` is ignored and so shared by every branch). Then:

1. a side branch rewords a job's prompt and runs it (paid: a new request);
2. back on ``main`` (the manifest as it was), a run finds that job's images replaced
   by the side's, in the shared ``outputs/``, and fetches its own again from their
   recorded links (free); main's entries are now the newer ones;
3. ``git merge`` of the side into main: the manifest is the side's, and the merge
   driver keeps the side's entries as superseded ones beside main's;
4. a run of the merged manifest owes nothing: the superseded entries hold every result
   it asks for (``World.held``), under the same keys.

Every run goes through ``World.run``, so the oracle's checks (nothing paid twice, the
ledger equal to the recorded spend, files intact) hold at each of them.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

from tests.journeys.world import HANG_GUARD, World

MAIN = "main"


def git(world: World, *args: str) -> subprocess.CompletedProcess[str]:
    """Run git in the project; a failure is the journey's (git must not refuse here)."""
    shims = world.root.parent / "shims"
    env = {k: v for k, v in world.env().items() if not k.startswith("GIT_")}
    env.update({
        # The merge driver ``imgspec init`` registers runs ``imgspec``: this checkout's.
        "PATH": f"{shims}{os.pathsep}{env.get('PATH', '')}",
        "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Journey", "GIT_AUTHOR_EMAIL": "journey@example.com",
        "GIT_COMMITTER_NAME": "Journey", "GIT_COMMITTER_EMAIL": "journey@example.com",
    })
    done = subprocess.run(["git", *args], cwd=world.root, env=env, text=True,
                          capture_output=True, timeout=HANG_GUARD, check=False)
    world.log.append(f"$ git {' '.join(args)} -> exit {done.returncode}")
    world.check(done.returncode == 0,
                f"git {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done


def ready(world: World) -> None:
    """Make the project a git repository with imgspec's merge driver, once."""
    if (world.root / ".git").is_dir():
        return
    shims = world.root.parent / "shims"
    shims.mkdir(exist_ok=True)
    shim = shims / "imgspec"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m pipeline "$@"\n')
    shim.chmod(0o755)
    git(world, "init", "-q", "-b", MAIN)
    init = world.imgspec(["init"], world.root)
    world.check(init.code == 0, f"imgspec init exited {init.code}")


def commit(world: World, message: str) -> None:
    """Commit everything git is meant to hold (outputs and run-time files are ignored)."""
    git(world, "add", "-A")
    git(world, "commit", "-q", "--allow-empty", "-m", message)


def merge_branches(world: World, job: str) -> None:
    """Run a side branch that rewords ``job``'s prompt and main as it is, in this one
    checkout, then merge the side into main and run: the merge pays nothing."""
    if world.model.duplicates() or any((world.root / "manifests").glob("*.journal")):
        # A refused manifest cannot be run on both sides; a run's unfolded journal is
        # not in git and would follow the work tree across branches.
        world.note("merge two branches run in this checkout: not now, nothing done")
        return
    ready(world)
    commit(world, "before the side branch")
    side = f"side{world.steps}"
    git(world, "checkout", "-q", "-b", side)
    before = copy.deepcopy(world.model)
    # What the oracle knows of each key follows the lockfile, which git checks out.
    known = (dict(world.delivered), dict(world.epoch), dict(world.epoch_start))
    if job == "a":
        world.model.a_prompt += 1
    else:
        world.model.b_prompt += 1
    world.write_manifest()
    world.note(f"on branch {side}: edit the prompt of {job} and run")
    world.run(cwd="root", style="relative", how="all", pick=0, faults=False, fault_seed=0,
              concurrency=4, interrupt="none")
    commit(world, f"{side}: reworded {job}")
    after = world.model

    git(world, "checkout", "-q", MAIN)
    world.model = before
    world.delivered, world.epoch, world.epoch_start = known
    world.note(f"back on {MAIN}: run --rehash (the side's images replaced {job}'s in "
               "outputs/)")
    # The plan tells a damaged image by its size (docs/planning.md); an image of the
    # other branch is as often as not the same size as the one it replaced, so after a
    # checkout that shares outputs/ only --rehash finds it (docs/teams.md).
    world.run(cwd="root", style="relative", how="all", pick=0, faults=False, fault_seed=0,
              concurrency=4, interrupt="none", rehash=True)
    commit(world, f"{MAIN}: run")

    git(world, "merge", "-q", "--no-edit", side)
    world.model = after
    world.check(Path(world.manifest).read_text() == after.manifest_text(),
                "the merge did not give the side branch's manifest")
    world.note(f"merge {side} into {MAIN} and run --rehash")
    world.run(cwd="root", style="relative", how="all", pick=0, faults=False, fault_seed=0,
              concurrency=4, interrupt="none", rehash=True)
    commit(world, "after the merge")
