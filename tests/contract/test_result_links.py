"""Result links: the plan says a re-download is free until the link expires, and when an
expired link means the image must be paid for again."""

from __future__ import annotations

import time

import pytest

from pipeline.simulator import RunningSimulator
from tests.e2e.conftest import Project
from tests.e2e.test_outputs import MANIFEST, charged, images, imgspec, lock_of, write_lock


@pytest.fixture
def one(project: Project) -> Project:
    """A project whose manifest ``manifests/one.yaml`` is one instance of two images."""
    (project.root / "manifests" / "one.yaml").write_text(MANIFEST)
    return project


def test_plan_says_a_missing_image_with_a_valid_link_is_downloaded_free(
        one: Project, sim: RunningSimulator) -> None:
    """The plan line names the download as paid already and free until the link's expiry."""
    assert imgspec("run", "manifests/one.yaml", cwd=one.root, sim=sim).returncode == 0
    images(one)[1].unlink()
    plan = imgspec("plan", "manifests/one.yaml", cwd=one.root)
    line = next(x for x in plan.stdout.splitlines() if "download" in x)
    assert "already paid, downloaded again" in line
    assert "free: its link is valid until" in line
    assert imgspec("run", "manifests/one.yaml", cwd=one.root, sim=sim).returncode == 0
    assert charged(sim) == 2


def test_plan_says_when_an_expired_link_means_paying_again(
        one: Project, sim: RunningSimulator) -> None:
    """An image gone after its link expired: the plan names the expiry and that it is paid."""
    assert imgspec("run", "manifests/one.yaml", cwd=one.root, sim=sim).returncode == 0
    data = lock_of(one)
    expired = int(time.time()) - 3600
    for entry in data["entries"].values():
        for output in entry["outputs"]:
            output["expires_at"] = expired
    write_lock(one, data)
    images(one)[0].unlink()
    plan = imgspec("plan", "manifests/one.yaml", cwd=one.root)
    shown = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(expired))
    assert f"its link expired at {shown}" in plan.stdout
    assert "generating it again is paid" in plan.stdout
