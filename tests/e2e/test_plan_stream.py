"""``plan --json`` of a whole manifest is streamed; its text is the held plan's, byte for byte.

The streamed path (no selection) and the held one (``--job`` naming every job,
which selects everything) are driven through ``python -m pipeline`` in a
subprocess, after a real run against the simulator, with changed, missing,
waiting and orphaned instances in the lockfile.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from pipeline.simulator import RunningSimulator
from tests.e2e.conftest import KEY, ROOT, Project, run_args

EVERY_JOB = ("--job", "gen", "--job", "night", "--job", "logo")


def imgspec(project: Project, *args: str) -> subprocess.CompletedProcess[str]:
    """``imgspec ARGS`` in a subprocess from the project's root."""
    env = {**os.environ, "APIMART_API_KEY": KEY, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=project.root, env=env,
                          text=True, capture_output=True, timeout=120, check=False)


def both(project: Project, *extra: str) -> tuple[subprocess.CompletedProcess[str],
                                                  subprocess.CompletedProcess[str]]:
    """``plan --json`` streamed, and held (every job selected), with ``extra`` options."""
    manifest = str(project.manifest)
    return (imgspec(project, "plan", "--json", manifest, *extra),
            imgspec(project, "plan", "--json", manifest, *EVERY_JOB, *extra))


def test_streamed_plan_is_the_held_plan_byte_for_byte(project: Project,
                                                     sim: RunningSimulator) -> None:
    """After a run and edits, the streamed plan --json is the held one's very text."""
    ran = imgspec(project, *run_args(project, sim))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    project.edit("[bakery, florist]", "[bakery, florist, cafe]")  # new, and waiting edits
    project.edit("A logo for", "A new logo for")  # changed
    lock = project.lock()
    lock["entries"]["gone@x=1"] = next(iter(lock["entries"].values()))  # orphaned
    project.lockfile.write_text(json.dumps(lock))
    gen = sorted(p for p in project.outputs.rglob("*.png") if "gen" in p.parts)
    gen[0].unlink()  # download (its link is valid)
    streamed, held = both(project)
    assert streamed.returncode == held.returncode == 0, streamed.stderr + held.stderr
    assert streamed.stdout == held.stdout
    data = json.loads(streamed.stdout)
    statuses = {item["status"] for item in data["items"]}
    assert statuses >= {"new", "changed", "waiting", "up-to-date", "download"}
    assert data["orphaned"] == ["gone@x=1"]


def test_streamed_plan_over_budget_exits_3_with_the_same_text(project: Project) -> None:
    """Over the budget, the streamed plan prints the same JSON and exits 3, as the held one."""
    streamed, held = both(project, "--max-cost", "0.5")
    assert streamed.returncode == held.returncode == 3
    assert streamed.stdout == held.stdout
    assert json.loads(streamed.stdout)["budget"]["within"] is False


def test_streamed_plan_of_an_invalid_manifest_prints_no_json(project: Project) -> None:
    """An error in a late instance: exit 1 and the error, and not a line of the plan."""
    project.edit('prompt: "A logo for {{ brand }}"', 'prompt: "A logo for {{ nobody }}"')
    streamed, held = both(project)
    assert streamed.returncode == held.returncode == 1
    assert streamed.stdout == ""
    assert "undefined variable 'nobody'" in streamed.stderr
    assert streamed.stderr == held.stderr
