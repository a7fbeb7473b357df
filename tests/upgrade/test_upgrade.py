"""Upgrading imgspec never changes the plan of a lockfile an earlier imgspec wrote."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import KEY, ROOT

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "main-lockfile"


def test_a_lockfile_written_before_the_seed_change_plans_as_up_to_date(tmp_path: Path) -> None:
    """A project run by the imgspec that derived seeds from the instance key (derived seeds,
    a matrix, an edit of upstream images, a local input, a fixed seed) plans all up to
    date: its entries keep their recorded seeds."""
    project = tmp_path / "project"
    shutil.copytree(FIXTURE, project)
    before = (project / "manifests" / "shop.lock.json").read_text()

    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "plan", "manifests/shop.yaml", "--json"],
        cwd=project, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT),
                          "APIMART_API_KEY": KEY},
        text=True, capture_output=True, timeout=120, check=False)

    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert {i["key"]: i["status"] for i in plan["items"]} == {
        "shot@c=red,variant=1": "up-to-date", "shot@c=red,variant=2": "up-to-date",
        "shot@c=blue,variant=1": "up-to-date", "shot@c=blue,variant=2": "up-to-date",
        "night@c=red,variant=1": "up-to-date", "logo": "up-to-date", "fixed": "up-to-date"}
    recorded = json.loads(before)["entries"]
    assert all(i["fingerprint"] == recorded[i["key"]]["fingerprint"] for i in plan["items"])
    assert plan["cost"]["total"] == 0
    assert (project / "manifests" / "shop.lock.json").read_text() == before
