"""The command line's user experience, driven through `python -m pipeline` in a subprocess.

Balance (402) exit code and advice, `--where` errors, the selection flags `plan`
and `run` share, and the live counts (in flight, charged, reserved).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

from pipeline.simulator import RunningSimulator
from tests.e2e.conftest import INSTANCES, KEY, ROOT, Project, run_args
from tests.simulator.simkit import StartSim

GEN = ("gen@shop=bakery,season=spring", "gen@shop=bakery,season=winter",
       "gen@shop=florist,season=spring", "gen@shop=florist,season=winter")


def imgspec(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the real command with this worktree's code; stdout and stderr kept apart."""
    env = {**os.environ, "APIMART_API_KEY": KEY, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "pipeline", *args], env=env, text=True,
                          capture_output=True, timeout=180, check=False)


def events(stdout: str) -> list[dict[str, Any]]:
    """The JSON events `run --json` printed."""
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def selected(project: Project, *flags: str) -> set[str]:
    """Keys `plan --json` would not skip under ``flags``."""
    done = imgspec("plan", "--json", str(project.manifest), *flags)
    assert done.returncode == 0, done.stderr
    return {i["key"] for i in json.loads(done.stdout)["items"] if i["status"] != "skipped"}


# -- 402 -------------------------------------------------------------------------------


def test_balance_exhausted_exits_7_and_advises_top_up(project: Project,
                                                      start_sim: StartSim) -> None:
    """A 402 ends the run with exit 7 and 'top up' advice, never 'rerun with --only-failed'."""
    sim = start_sim(balance=Decimal("0.80"))  # two of the four ¥0.40 gen instances
    done = imgspec(*run_args(project, sim))
    output = done.stdout + done.stderr
    assert done.returncode == 7, output
    assert "HTTP 402" in done.stderr
    assert "Top up the APIMart account, then run the same command again" in done.stderr
    assert "--only-failed" not in output
    assert "Traceback" not in output
    assert "not submitted" in done.stdout  # the summary names what was left
    assert sim.ledger().cost_charged == Decimal("0.80")


# -- --where ---------------------------------------------------------------------------


def test_where_unknown_axis_is_a_usage_error(project: Project, sim: RunningSimulator) -> None:
    """`--where nosuchaxis=1` exits 2 naming the axes that exist, for plan and run alike."""
    for args in (["plan", str(project.manifest)], run_args(project, sim)):
        done = imgspec(*args, "--where", "nosuchaxis=1")
        assert done.returncode == 2, done.stdout + done.stderr
        assert ("--where nosuchaxis=1: no instance has a matrix axis 'nosuchaxis'; "
                "axes: season, shop") in done.stderr
    assert sim.ledger().submissions == 0


def test_where_value_matching_nothing_lists_existing_values(project: Project,
                                                            sim: RunningSimulator) -> None:
    """`--where shop=bakrey` exits 2 with the values shop takes, sorted; nothing is sent."""
    for args in (["plan", str(project.manifest)], run_args(project, sim)):
        done = imgspec(*args, "--where", "shop=bakrey")
        assert done.returncode == 2, done.stdout + done.stderr
        assert ("--where shop=bakrey: no instance has shop 'bakrey'; shop is one of: "
                "bakery, florist") in done.stderr
    assert sim.ledger().submissions == 0


def test_where_axis_missing_from_the_selected_job_is_a_usage_error(project: Project) -> None:
    """`--job logo --where shop=bakery` exits 2: logo has no matrix, so nothing could match."""
    done = imgspec("plan", str(project.manifest), "--job", "logo", "--where", "shop=bakery")
    assert done.returncode == 2
    assert "no instance of job logo has a matrix axis 'shop'" in done.stderr


def test_where_on_two_axes_combines_with_and(project: Project) -> None:
    """Different axes must all match; values of one axis are alternatives."""
    both = selected(project, "--where", "shop=bakery", "--where", "season=winter")
    assert both == {"gen@shop=bakery,season=winter", "night@shop=bakery,season=winter"}
    either = selected(project, "--job", "gen", "--where", "shop=bakery",
                      "--where", "shop=florist", "--where", "season=spring")
    assert either == {"gen@shop=bakery,season=spring", "gen@shop=florist,season=spring"}


def test_where_values_no_instance_has_together_is_a_usage_error(tmp_path: Path) -> None:
    """Two values that each exist but never together exit 2 rather than select nothing."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "version: 1\nname: m\ndefaults: {model: wan2.7-image}\n"
        "jobs:\n  a:\n    prompt: '{{ x }} {{ y }}'\n"
        "    matrix: {x: [1, 2], y: [p, q], exclude: [{x: 1, y: q}]}\n")
    done = imgspec("plan", str(manifest), "--where", "x=1", "--where", "y=q")
    assert done.returncode == 2
    assert "no instance matches all of these together" in done.stderr
    assert imgspec("plan", str(manifest), "--where", "x=2", "--where", "y=q").returncode == 0


def test_where_lists_many_values_sorted_and_truncated(tmp_path: Path) -> None:
    """An axis of 30 numbers is listed in numeric order, the first 20 and a count of the rest."""
    manifest = tmp_path / "m.yaml"
    values = ", ".join(str(i) for i in range(30, 0, -1))
    manifest.write_text(
        "version: 1\nname: m\ndefaults: {model: wan2.7-image}\n"
        f"jobs:\n  a:\n    prompt: 'n {{{{ i }}}}'\n"
        f"    matrix: {{i: [{values}]}}\n")
    done = imgspec("plan", str(manifest), "--where", "i=31")
    assert done.returncode == 2
    listed = ", ".join(str(i) for i in range(1, 21))
    assert f"i is one of: {listed}, ... (10 more of 30;" in done.stderr
    assert imgspec("plan", str(manifest), "--where", "i=7").returncode == 0  # "7" selects 7


# -- plan and run share the selection flags --------------------------------------------


def test_plan_takes_the_same_selection_flags_as_run(project: Project) -> None:
    """`plan` accepts --job/--where/--only-failed, defined once and shown alike in both helps."""
    helps = [imgspec(command, "--help").stdout for command in ("plan", "run")]
    for flag in ("--job ID", "--where AXIS=VALUE", "--only-failed"):
        assert all(flag in text for text in helps), flag
    assert selected(project, "--job", "gen", "--where", "season=winter") == {
        "gen@shop=bakery,season=winter", "gen@shop=florist,season=winter"}
    assert selected(project, "--only-failed") == set()  # nothing has failed yet


def test_plan_over_budget_advice_can_be_followed(project: Project) -> None:
    """The over-budget plan suggests --job/--where, and `plan` accepts them to fit the budget."""
    over = imgspec("plan", str(project.manifest), "--max-cost", "0.5")
    assert over.returncode == 3
    assert "narrow the plan (--job, --where)" in over.stdout
    narrowed = imgspec("plan", str(project.manifest), "--max-cost", "0.5", "--job", "gen",
                       "--where", "shop=bakery", "--where", "season=spring")
    assert narrowed.returncode == 0, narrowed.stderr
    assert "within budget" in narrowed.stdout


# -- live counts -----------------------------------------------------------------------


def test_in_flight_never_exceeds_concurrency(project: Project, start_sim: StartSim) -> None:
    """'in flight' counts tasks at the API, not queued ones: at most --concurrency, and reached."""
    sim = start_sim(latency=(1.0, 1.0))  # tasks outlive the submissions beside them
    done = imgspec("run", str(project.manifest), "--base-url", sim.base_url, "--yes",
                   "--concurrency", "2", "--json")
    assert done.returncode == 0, done.stderr
    in_flight = [e["in_flight"] for e in events(done.stdout)]
    assert max(in_flight) == 2
    assert in_flight[-1] == 0


def test_charged_and_reserved_are_reported_apart(project: Project,
                                                 start_sim: StartSim) -> None:
    """Charged only grows and ends at what the API charged; reserved is held, then released."""
    sim = start_sim(seed=2, faults={"task.fail": 0.4})
    done = imgspec(*run_args(project, sim, "--json"))
    assert done.returncode == 4, done.stderr  # some tasks failed (and were refunded)
    seen = events(done.stdout)
    charged = [Decimal(str(e["charged"])) for e in seen]
    assert charged == sorted(charged)  # a refund never lowers it
    assert any(e["reserved"] > 0 for e in seen)
    assert any(e["event"] == "failed" for e in seen)
    ledger = sim.ledger()
    assert charged[-1] == ledger.cost_charged
    assert seen[-1]["reserved"] == 0
    assert f"charged ¥{ledger.cost_charged:.2f}." in done.stderr
    assert "spent" not in done.stdout + done.stderr


def test_plain_lines_show_in_flight_charged_and_reserved(project: Project,
                                                         sim: RunningSimulator) -> None:
    """Without a terminal, each line carries the same facts as the JSON events."""
    done = imgspec(*run_args(project, sim))
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("[")]
    assert len(lines) == INSTANCES
    assert all(" in flight; charged ¥" in line and ", reserved ¥" in line for line in lines)
    assert lines[-1].endswith("(0 in flight; charged ¥2.20, reserved ¥0.00)")
    assert "Run: 7 done, 0 failed, 0 blocked, 0 unfinished; charged ¥2.20." in done.stdout


def test_tasks_left_running_are_reported_as_reserved(project: Project,
                                                     start_sim: StartSim) -> None:
    """A task still running at --task-timeout stays reserved, not charged, and is named so."""
    sim = start_sim(latency=(30.0, 30.0))
    done = imgspec(*run_args(project, sim, "--job", "logo", "--task-timeout", "1", "--json"))
    assert done.returncode == 4, done.stderr
    last = events(done.stdout)[-1]
    assert (last["event"], last["charged"], last["reserved"]) == ("unfinished", 0, 0.2)
    assert ("Reserved: ¥0.20 pre-charged for 1 task(s) still running; the next run polls "
            "them") in done.stderr
