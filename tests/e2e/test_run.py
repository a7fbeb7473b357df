"""`imgspec run` against the simulator over real HTTP: complete, idempotent, incremental, safe."""

from __future__ import annotations

import hashlib
import json
import random
import signal
import time
from pathlib import Path

import pytest
from PIL import Image

from pipeline.shell.store.guard import RunGuard, guard_path
from pipeline.simulator import RunningSimulator
from tests.e2e.conftest import IMAGES, INSTANCES, KEY, Imgspec, Project, run_args, spawn
from tests.simulator.simkit import StartSim


def image_files(project: Project) -> list[Path]:
    return sorted(p for p in project.outputs.rglob("*") if p.suffix == ".png")


def assert_complete(project: Project) -> None:
    """Lockfile, files and meta.json agree, and every image decodes."""
    entries = project.lock()["entries"]
    assert len(entries) == INSTANCES
    assert all(e["status"] == "done" for e in entries.values())
    outputs = [o for e in entries.values() for o in e["outputs"]]
    assert len(outputs) == IMAGES
    for output in outputs:
        path = project.lockfile.parent / output["path"]
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == output["sha256"]
        with Image.open(path) as image:
            image.verify()
    assert len(image_files(project)) == IMAGES
    metas = list(project.outputs.rglob("meta.json"))
    assert len(metas) == INSTANCES
    index = json.loads((project.outputs / "index.json").read_text())
    assert {i["status"] for i in index["instances"]} == {"done"}


def test_run_completes_and_everything_agrees(project: Project, sim: RunningSimulator,
                                             imgspec: Imgspec) -> None:
    """A matrix job and an edit job fed by its images run; files, lockfile and ledger agree."""
    result = imgspec(*run_args(project, sim))
    assert result.exit_code == 0, result.output
    assert_complete(project)
    ledger = sim.ledger()
    assert ledger.tasks_created == INSTANCES
    assert ledger.images_charged == IMAGES
    night = next(e for k, e in project.lock()["entries"].items() if k.startswith("night@"))
    assert night["request"]["image_urls"][0].startswith("upstream:gen@")
    assert f"Images are in {project.outputs}" in result.output


def test_second_run_submits_nothing(project: Project, sim: RunningSimulator,
                                    imgspec: Imgspec) -> None:
    """Rerunning a finished manifest makes no request to submit and exits 0."""
    assert imgspec(*run_args(project, sim)).exit_code == 0
    before = sim.ledger().submissions
    again = imgspec(*run_args(project, sim))
    assert again.exit_code == 0
    assert "Nothing to do." in again.output
    assert sim.ledger().submissions == before


def test_changed_prompt_reruns_job_and_dependants(project: Project, sim: RunningSimulator,
                                                  imgspec: Imgspec) -> None:
    """Changing a job's prompt reruns its instances and their dependants only."""
    assert imgspec(*run_args(project, sim)).exit_code == 0
    project.edit("The same {{ shop }} at night", "The same {{ shop }} by night")
    before = sim.ledger().tasks_created
    assert imgspec(*run_args(project, sim)).exit_code == 0
    assert sim.ledger().tasks_created == before + 2  # the two night instances
    project.edit("in {{ season }}", "during {{ season }}")
    before = sim.ledger().tasks_created
    assert imgspec(*run_args(project, sim)).exit_code == 0
    assert sim.ledger().tasks_created == before + 4 + 2  # gen, then night fed by new images
    assert_complete(project)


def test_faults_never_pay_twice(project: Project, start_sim: StartSim,
                                imgspec: Imgspec) -> None:
    """With every fault kind on, a run and a few --only-failed reruns finish, paying once."""
    sim = start_sim(seed=5, stuck_factor=10.0, faults={
        "submit.429": 0.1, "submit.5xx": 0.1, "submit.reset": 0.05,
        "submit.lost_reply": 0.15, "poll.5xx": 0.1, "poll.malformed": 0.05,
        "task.fail": 0.2, "task.stuck": 0.1, "download.truncate": 0.1, "download.5xx": 0.1})
    result = imgspec(*run_args(project, sim))
    for _ in range(5):
        if result.exit_code == 0:
            break
        assert result.exit_code == 4, result.output
        result = imgspec(*run_args(project, sim, "--only-failed"))
    assert result.exit_code == 0, result.output
    assert_complete(project)
    ledger = sim.ledger()
    assert ledger.images_charged == IMAGES  # failed tasks refunded, replays not charged
    assert sum(ledger.faults.values()) > 0


def test_retries_are_reported_as_events(project: Project, start_sim: StartSim,
                                        imgspec: Imgspec) -> None:
    """With --json, each retry the client makes is an event with what failed and the wait."""
    sim = start_sim(seed=3, faults={"poll.5xx": 0.5})
    result = imgspec(*run_args(project, sim, "--json", "--job", "logo"))
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    retries = [e for e in events if e["event"] == "retry"]
    assert retries
    assert "poll attempt 1 failed" in retries[0]["message"]


def test_sigkill_at_random_moments_then_resume(project: Project, sim: RunningSimulator) -> None:
    """Killing runs with SIGKILL at ten seeded moments loses nothing and pays nothing twice."""
    rng = random.Random(1234)
    for _ in range(10):
        proc = spawn(run_args(project, sim))
        time.sleep(rng.uniform(0.3, 2.5))
        proc.kill()
        proc.communicate(timeout=30)
    final = spawn(run_args(project, sim))
    output, _ = final.communicate(timeout=120)
    assert final.returncode == 0, output
    assert_complete(project)
    ledger = sim.ledger()
    assert ledger.tasks_created == INSTANCES  # every lost reply was replayed, not re-bought
    assert ledger.images_charged == IMAGES


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_exits_130_and_resumes(project: Project, start_sim: StartSim,
                                         sig: signal.Signals) -> None:
    """SIGINT/SIGTERM stop the run with exit 130; the next run resumes, paying once."""
    sim = start_sim(latency=(3.0, 3.0))  # tasks are surely in flight when the signal lands
    proc = spawn(run_args(project, sim))
    deadline = time.monotonic() + 30
    while sim.ledger().tasks_created == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(sig)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    assert "interrupted" in output
    assert "Traceback" not in output
    running = [e for e in project.lock()["entries"].values() if e["status"] == "running"]
    assert running  # recorded in-flight tasks, to be polled by the next run
    final = spawn(run_args(project, sim))
    output, _ = final.communicate(timeout=120)
    assert final.returncode == 0, output
    assert_complete(project)
    ledger = sim.ledger()
    assert ledger.tasks_created == INSTANCES
    assert ledger.images_charged == IMAGES


def test_concurrent_run_is_refused(project: Project, sim: RunningSimulator,
                                   imgspec: Imgspec) -> None:
    """A second run on the same manifest is refused while the first holds the guard."""
    with RunGuard(guard_path(project.lockfile)):
        result = imgspec(*run_args(project, sim))
    assert result.exit_code == 5
    assert "another imgspec run" in result.output
    assert sim.ledger().submissions == 0


def test_api_key_never_leaks(project: Project, sim: RunningSimulator, imgspec: Imgspec,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The key appears in no lockfile, output file or captured output, even on a 401."""
    result = imgspec(*run_args(project, sim, "--json"))
    assert result.exit_code == 0
    monkeypatch.setenv("APIMART_API_KEY", KEY + "-wrong")
    refused = imgspec(*run_args(project, sim, "--only-failed", "--job", "gen"))
    texts = [result.output, refused.output, project.lockfile.read_text()]
    texts += [p.read_text(errors="replace") for p in project.outputs.rglob("*.json")]
    texts += [p.read_bytes().decode("latin-1") for p in image_files(project)]
    assert not [t for t in texts if KEY in t]


def test_wrong_key_stops_the_run(project: Project, sim: RunningSimulator, imgspec: Imgspec,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A 401 stops the whole run with a message naming the environment variable."""
    monkeypatch.setenv("APIMART_API_KEY", "not-the-key")
    result = imgspec(*run_args(project, sim))
    assert result.exit_code == 6
    assert "401" in result.output


def test_simulate_needs_no_key_and_keeps_its_own_files(project: Project, imgspec: Imgspec,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """`run --simulate` runs in-process with its own lockfile and output folder."""
    monkeypatch.delenv("APIMART_API_KEY")
    result = imgspec("run", "--simulate", str(project.manifest))
    assert result.exit_code == 0, result.output
    assert (project.root / "manifests" / "shop.simulate.lock.json").is_file()
    assert (project.root / "outputs" / "shop.simulate" / "index.json").is_file()
    assert not project.lockfile.exists()


def test_budget_refuses_before_spending(project: Project, sim: RunningSimulator,
                                        imgspec: Imgspec) -> None:
    """A plan over --max-cost exits 3 and submits nothing."""
    result = imgspec(*run_args(project, sim, "--max-cost", "1"))
    assert result.exit_code == 3
    assert sim.ledger().submissions == 0


def test_status_verify_prune(project: Project, sim: RunningSimulator, imgspec: Imgspec) -> None:
    """status reports done entries, verify catches a damaged file, prune drops orphans."""
    assert imgspec(*run_args(project, sim)).exit_code == 0
    status = json.loads(imgspec("status", str(project.manifest), "--json").output)
    assert status["counts"]["done"] == INSTANCES
    assert imgspec("verify", str(project.manifest)).exit_code == 0
    image_files(project)[0].write_bytes(b"tampered")
    assert imgspec("verify", str(project.manifest)).exit_code == 1
    project.edit("  logo:\n", "  badge:\n")
    pruned = imgspec("prune", str(project.manifest))
    assert "pruned logo" in pruned.output
    assert "logo" not in project.lock()["entries"]


def test_undownloadable_results_fail_instead_of_resuming_forever(
        project: Project, start_sim: StartSim, imgspec: Imgspec) -> None:
    """Results refused even after re-polls fail the attempt, so a rerun can start afresh."""
    sim = start_sim(faults={"download.expired": 1.0})
    result = imgspec(*run_args(project, sim, "--job", "logo"))
    assert result.exit_code == 4
    entry = project.lock()["entries"]["logo"]
    assert entry["status"] == "failed"
    assert "cannot be downloaded" in entry["last_error"]
    assert entry["cost"] == 0.2  # the task completed, so it was charged
    plan = json.loads(imgspec("plan", "--json", str(project.manifest)).output)
    assert next(i for i in plan["items"] if i["key"] == "logo")["status"] == "retry"
