"""Balance: GET /v1/balance read tolerantly, `imgspec balance`, `run` refusing the unpayable."""

from __future__ import annotations

import json
import shutil
from decimal import Decimal

import pytest

from pipeline.core.apimart.replies import Balance, parse_balance
from pipeline.errors import RequestRejected, TransientError
from tests.contract.conftest import FOUR_SHOPS, cli
from tests.e2e.conftest import Project
from tests.simulator.simkit import StartSim


def test_balance_reply_shapes_are_read() -> None:
    """The documented reply, -1 / unlimited_quota, a ``data`` wrapper; failures refused."""
    assert parse_balance({"success": True, "remain_balance": 10.5, "used_balance": 2.3,
                          "unlimited_quota": False}) == Balance(Decimal("10.5"),
                                                                Decimal("2.3"), False)
    assert parse_balance({"success": True, "remain_balance": -1, "used_balance": 0,
                          "unlimited_quota": True}).unlimited
    assert parse_balance({"remain_balance": -1}).remain is None
    assert parse_balance({"data": {"remain_balance": "3.25"}}).remain == Decimal("3.25")
    with pytest.raises(RequestRejected, match="Failed to get token info"):
        parse_balance({"success": False, "message": "Failed to get token info"})
    with pytest.raises(TransientError):
        parse_balance({"success": True, "remain_balance": "lots"})


def test_balance_command_prints_the_balance_as_it_falls(project: Project,
                                                        start_sim: StartSim) -> None:
    """`imgspec balance` shows the simulator's balance, lower after images are charged."""
    sim = start_sim(balance=Decimal("5"))
    before = cli("balance", "--base-url", sim.base_url)
    assert before.returncode == 0, before.stderr
    assert "balance: 5.0 remaining" in before.stdout
    project.manifest.write_text(FOUR_SHOPS)
    ran = cli("run", str(project.manifest), "--base-url", sim.base_url, "--yes",
              "--balance-unit", "CNY")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    after = cli("balance", "--base-url", sim.base_url, "--balance-unit", "CNY", "--json")
    assert '"remain_balance": "4.2"' in after.stdout
    assert '"used_balance": "0.8"' in after.stdout
    unlimited = cli("balance", "--base-url", start_sim().base_url)
    assert "unlimited quota" in unlimited.stdout


def test_run_over_the_balance_is_refused_before_any_submission(project: Project,
                                                               start_sim: StartSim) -> None:
    """A plan of ¥0.80 against 0.50 left: exit 8, says ¥0.30 is missing, nothing sent."""
    sim = start_sim(balance=Decimal("0.5"))
    project.manifest.write_text(FOUR_SHOPS)
    ran = cli("run", str(project.manifest), "--base-url", sim.base_url, "--yes",
              "--balance-unit", "CNY")
    assert ran.returncode == 8, ran.stdout + ran.stderr
    assert "¥0.30 is missing" in ran.stderr
    assert sim.ledger().submissions == 0


def test_run_compares_only_in_the_plans_currency_unless_told_to_go_ahead(
        project: Project, start_sim: StartSim) -> None:
    """Unknown unit: a note, no refusal; --ignore-balance: no check; the 402 still stops it."""
    sim = start_sim(balance=Decimal("0.5"))
    project.manifest.write_text(FOUR_SHOPS)
    ran = cli("run", str(project.manifest), "--base-url", sim.base_url, "--yes")
    assert "not compared" in ran.stdout
    assert ran.returncode == 7, ran.stdout + ran.stderr
    assert sim.ledger().tasks_created == 2
    # Afresh: the refused instances' entries would otherwise be resumed, not planned.
    project.lockfile.unlink()
    shutil.rmtree(project.outputs)
    other = start_sim(balance=Decimal("0.5"))
    ignored = cli("run", str(project.manifest), "--base-url", other.base_url, "--yes",
                  "--balance-unit", "CNY", "--ignore-balance")
    assert ignored.returncode == 7, ignored.stdout + ignored.stderr
    assert other.ledger().tasks_created == 2


def test_instances_refused_with_402_are_priced_by_the_next_plan(
        project: Project, start_sim: StartSim) -> None:
    """After a 402 no task exists: the next plan retries and prices them, never a free resume."""
    sim = start_sim(balance=Decimal("0.5"))
    project.manifest.write_text(FOUR_SHOPS)
    ran = cli("run", str(project.manifest), "--base-url", sim.base_url, "--yes",
              "--ignore-balance")
    assert ran.returncode == 7, ran.stdout + ran.stderr
    assert sim.ledger().tasks_created == 2
    plan = cli("plan", "--json", str(project.manifest))
    items = {i["key"]: i for i in json.loads(plan.stdout)["items"]}
    refused = [i for i in items.values() if i["status"] != "up-to-date"]
    assert len(refused) == 2
    assert {i["status"] for i in refused} == {"retry"}
    assert all(i["cost"] > 0 for i in refused)
