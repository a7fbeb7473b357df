"""`imgspec run` against hostile result hosts: a dripping download and a bad-scheme result URL
fail the attempt promptly, with the reason in the run's failure list and in `status`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pipeline.simulator import RunningSimulator
from tests.e2e.conftest import KEY, ROOT, Project, run_args
from tests.simulator.simkit import StartSim

pytestmark = pytest.mark.timeout(120)

# Small limits, so the test is quick; the task timeout stays long, so a download that
# escaped them would hang the run until the guard below, not pass by timing out.
LIMITS = {"IMGSPEC_DOWNLOAD_DEADLINE": "3", "IMGSPEC_DOWNLOAD_MIN_RATE": "1000",
          "IMGSPEC_DOWNLOAD_RATE_WINDOW": "0.5"}


def imgspec(*args: str, **limits: str) -> subprocess.CompletedProcess[str]:
    """The real command line in a subprocess, with the test key and the small limits."""
    env = {**os.environ, "APIMART_API_KEY": KEY, "PYTHONPATH": str(ROOT), **LIMITS, **limits}
    return subprocess.run([sys.executable, "-m", "pipeline", *args], env=env, text=True,
                          capture_output=True, timeout=90, check=False)


def run_logo(project: Project, sim: RunningSimulator,
             **limits: str) -> subprocess.CompletedProcess[str]:
    return imgspec(*run_args(project, sim, "--job", "logo", "--task-timeout", "600"), **limits)


def status_failures(project: Project) -> dict[str, str]:
    result = imgspec("status", "--json", str(project.manifest))
    assert result.returncode == 0, result.stderr
    return {f["key"]: f["error"] for f in json.loads(result.stdout)["failed"]}


def test_dripping_download_fails_the_attempt_as_too_slow(project: Project,
                                                         start_sim: StartSim) -> None:
    """An image host sending a byte a second fails the attempt (minimum rate), not the run's
    task timeout; the reason is in the failure list and in `status`."""
    sim = start_sim(faults={"download.drip": 1.0})
    result = run_logo(project, sim)
    assert result.returncode == 4, result.stdout + result.stderr
    assert "the image host is too slow" in result.stdout
    assert "still running" not in result.stdout
    failed = status_failures(project)
    assert "too slow" in failed["logo"]
    assert "below the minimum of 1000 bytes/s" in failed["logo"]
    assert sim.ledger().faults["download.drip"] >= 1


def test_download_deadline_stops_a_download_that_keeps_the_minimum_rate(
        project: Project, start_sim: StartSim) -> None:
    """With no minimum rate, the overall deadline alone ends a dripping download."""
    sim = start_sim(faults={"download.drip": 1.0})
    result = run_logo(project, sim, IMGSPEC_DOWNLOAD_MIN_RATE="0", IMGSPEC_DOWNLOAD_DEADLINE="1")
    assert result.returncode == 4, result.stdout + result.stderr
    assert "not finished after 1 s" in status_failures(project)["logo"]


def test_bad_scheme_result_url_is_polled_again_then_fails_for_its_results(
        project: Project, start_sim: StartSim) -> None:
    """A completed task whose image URLs stay file:// or gopher:// is polled again a bounded
    number of times, then fails for its results (not as a task) with that reason, instead
    of being retried as malformed until the task timeout."""
    sim = start_sim(faults={"poll.bad_url": 1.0})
    result = run_logo(project, sim)
    assert result.returncode == 4, result.stdout + result.stderr
    reason = "scheme; imgspec downloads results only over https"
    assert reason in result.stdout
    assert "still running" not in result.stdout
    failed = status_failures(project)
    assert reason in failed["logo"]
    assert "file://" in failed["logo"]  # the simulator alternates: file, gopher, file
    assert project.lock()["entries"]["logo"]["failure"] == "results"
    ledger = sim.ledger()
    assert ledger.faults["poll.bad_url"] == 3  # RunOptions.download_attempts
    assert ledger.tasks_created == 1
