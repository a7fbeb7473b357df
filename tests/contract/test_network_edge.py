"""The API client's edge through the real command line: where the key may go, what a base
URL may be, and what a user is told when nothing (or the wrong thing) answers there.

Nothing here leaves 127.0.0.1: a remote host is named only where the refusal happens
before any connection, and a recording proxy on loopback shows nothing was sent.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import stamina

from tests.contract.conftest import FOUR_SHOPS, cli
from tests.e2e.conftest import KEY, Imgspec, Project, spawn
from tests.simulator.simkit import StartSim

# Every test here runs a few short commands; nothing waits on a backoff.
QUICK = 30.0
BALANCE = json.dumps({"success": True, "remain_balance": 12.5, "used_balance": 1,
                      "unlimited_quota": False}).encode()
NO_PROXY = {"NO_PROXY": "", "no_proxy": "", "HTTP_PROXY": "", "http_proxy": "",
            "HTTPS_PROXY": "", "https_proxy": "", "ALL_PROXY": "", "all_proxy": ""}


@dataclass
class Recorder:
    """A plain http server on 127.0.0.1 that records every request it gets (method,
    target, Authorization header) and answers from ``statuses`` in turn (the last one
    repeated) with a balance reply."""

    port: int
    statuses: list[int]
    seen: list[tuple[str, str, str | None]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    """A running :class:`Recorder` answering 200, stopped after the test."""
    record = Recorder(port=0, statuses=[200])

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            record.seen.append((self.command, self.path, self.headers.get("Authorization")))
            status = record.statuses[min(len(record.seen), len(record.statuses)) - 1]
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(BALANCE)))
            self.end_headers()
            self.wfile.write(BALANCE)

        do_POST = do_GET

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    record.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield record
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def closed_port() -> int:
    """A port of 127.0.0.1 nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def entries(project: Project) -> dict[str, Any]:
    """The lockfile's entries (none when there is no lockfile)."""
    if not project.lockfile.exists():
        return {}
    found: dict[str, Any] = project.lock()["entries"]
    return found


def run(project: Project, *extra: str, env: dict[str, str] | None = None) -> Any:
    """`imgspec run --yes` of the project's manifest, bounded in time."""
    return cli("run", str(project.manifest), "--yes", *extra, env={**NO_PROXY, **(env or {})},
               timeout=QUICK)


# -- item 6: the key only over https, or plain http to this machine --------------------


def test_key_is_not_sent_over_plain_http_to_another_machine(project: Project,
                                                            recorder: Recorder) -> None:
    """An http:// base URL naming another host is refused before any connection (exit 2,
    naming APIMART_BASE_URL): a proxy on loopback receives nothing, so no key."""
    project.manifest.write_text(FOUR_SHOPS)
    env = {**NO_PROXY, "APIMART_BASE_URL": "http://api.apimart.example",
           "HTTP_PROXY": recorder.url, "http_proxy": recorder.url}
    balance = cli("balance", env=env, timeout=QUICK)
    ran = cli("run", str(project.manifest), "--yes", env=env, timeout=QUICK)
    for refused in (balance, ran):
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "(from APIMART_BASE_URL) uses plain http" in refused.stderr
        assert "use https://api.apimart.example" in refused.stderr
    assert recorder.seen == []
    assert entries(project) == {}


def test_key_is_sent_over_plain_http_to_this_machine(recorder: Recorder) -> None:
    """Plain http to 127.0.0.1 or localhost (a simulator) carries the key as before."""
    for host in ("127.0.0.1", "localhost"):
        got = cli("balance", "--base-url", f"http://{host}:{recorder.port}", env=NO_PROXY,
                  timeout=QUICK)
        assert got.returncode == 0, got.stderr
        assert "12.5" in got.stdout
    assert [auth for _method, _path, auth in recorder.seen] == [f"Bearer {KEY}"] * 2


# -- item 11: a malformed base URL is a usage error naming its source -------------------


@pytest.mark.parametrize(("url", "problem"), [
    ("http://[::1", "cannot be parsed"),
    ("http://user:pass@127.0.0.1:{port}", "holds a user name or password"),
    ("http://127.0.0.1:{port}?x=", "has a query or fragment"),
    ("http://127.0.0.1:{port}/#top", "has a query or fragment"),
])
def test_malformed_base_url_is_a_usage_error_naming_where_it_came_from(
        project: Project, start_sim: StartSim, url: str, problem: str) -> None:
    """Each malformed form, from --base-url or APIMART_BASE_URL, is exit 2 with what is
    wrong and where it came from: no traceback, nothing submitted, nothing recorded."""
    sim = start_sim()
    port = sim.base_url.rsplit(":", 1)[1]
    project.manifest.write_text(FOUR_SHOPS)
    given = url.format(port=port)
    by_option = run(project, "--base-url", given)
    by_env = run(project, env={"APIMART_BASE_URL": given})
    for refused, source in ((by_option, "--base-url"), (by_env, "APIMART_BASE_URL")):
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert f"(from {source}) {problem}" in refused.stderr
        assert "This is a bug" not in refused.stderr
    assert sim.ledger().submissions == 0
    assert entries(project) == {}


# -- item 13: nothing listening ---------------------------------------------------------


def test_nothing_listening_stops_the_run_at_once_and_records_nothing(
        project: Project) -> None:
    """A closed port: the run says it cannot connect to HOST:PORT and which settings to
    check, exits 6 within seconds, and records no submission (the requests never left),
    whether the balance check or a submission finds it first."""
    port = closed_port()
    project.manifest.write_text(FOUR_SHOPS)
    for extra in ((), ("--ignore-balance",)):
        ran = run(project, "--base-url", f"http://127.0.0.1:{port}", *extra)
        assert ran.returncode == 6, ran.stdout + ran.stderr
        assert f"cannot connect to 127.0.0.1:{port} (connection refused" in ran.stderr
        assert "check --base-url / APIMART_BASE_URL" in ran.stderr
        assert "outcome unknown" not in ran.stdout + ran.stderr
        assert entries(project) == {}
    plan = cli("plan", "--json", str(project.manifest))
    assert {i["status"] for i in json.loads(plan.stdout)["items"]} == {"new"}


def test_unreachable_submission_leaves_the_entry_as_it_was(project: Project,
                                                           start_sim: StartSim) -> None:
    """A changed instance whose submission cannot connect keeps its done entry and images
    (nothing was paid): the next plan shows it changed again, and the ledger, the images
    on disk and the lockfile's spend still agree."""
    sim = start_sim()
    project.manifest.write_text(FOUR_SHOPS)
    first = run(project, "--base-url", sim.base_url)
    assert first.returncode == 0, first.stdout + first.stderr
    before = entries(project)
    project.edit("grocer, baker", "grocer, baker shop")
    ran = run(project, "--base-url", f"http://127.0.0.1:{closed_port()}", "--ignore-balance")
    assert ran.returncode == 6, ran.stdout + ran.stderr
    assert "cannot connect to" in ran.stderr
    assert entries(project) == before
    plan = cli("plan", "--json", str(project.manifest))
    statuses = sorted(i["status"] for i in json.loads(plan.stdout)["items"])
    assert statuses == ["new", "up-to-date", "up-to-date", "up-to-date"]
    ledger = sim.ledger()
    assert ledger.tasks_created == 4
    assert len(list(project.outputs.rglob("*.png"))) == ledger.images_charged == 4
    assert sum(Decimal(str(e["charged"])) for e in before.values()) == ledger.cost_charged


def test_unanswered_submission_keeps_its_key_through_an_unreachable_run(
        project: Project, start_sim: StartSim, imgspec: Imgspec) -> None:
    """Entries left ``submitting`` (a POST whose reply never came) stay so, with the same
    Idempotency-Key, through a run that cannot connect: the earlier POST may have made a
    task, so the next run must replay that key, not start a new attempt."""
    broken = start_sim(faults={"submit.reset": 1.0})
    project.manifest.write_text(FOUR_SHOPS)
    with stamina.set_testing(True):  # one attempt, no backoff: the run ends at once
        left = imgspec("run", str(project.manifest), "--yes", "--base-url", broken.base_url)
    assert left.exit_code == 4, left.output
    before = entries(project)
    assert {e["status"] for e in before.values()} == {"submitting"}
    ran = imgspec("run", str(project.manifest), "--yes", "--ignore-balance",
                  "--base-url", f"http://127.0.0.1:{closed_port()}")
    assert ran.exit_code == 6, ran.output
    assert entries(project) == before
    healthy = start_sim()
    done = imgspec("run", str(project.manifest), "--yes", "--base-url", healthy.base_url)
    assert done.exit_code == 0, done.output
    assert {e["idempotency_key"] for e in entries(project).values()} == {
        e["idempotency_key"] for e in before.values()}
    assert broken.ledger().tasks_created == 0
    assert healthy.ledger().tasks_created == 4
    assert len(list(project.outputs.rglob("*.png"))) == healthy.ledger().images_charged == 4


def test_tasks_resumed_with_nothing_listening_stop_the_run_at_once(
        project: Project, start_sim: StartSim) -> None:
    """Tasks left running by an earlier run, resumed against a closed port: the run stops
    at once (no polling until the task timeout), exit 6, the tasks stay recorded running."""
    sim = start_sim(latency=(600, 600))
    project.manifest.write_text(FOUR_SHOPS)
    first = spawn(["run", str(project.manifest), "--yes", "--base-url", sim.base_url])
    deadline = time.monotonic() + QUICK
    while sim.ledger().tasks_created < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGINT)
    output, _ = first.communicate(timeout=QUICK)
    assert first.returncode == 130, output
    assert {e["status"] for e in entries(project).values()} == {"running"}
    ran = run(project, "--base-url", f"http://127.0.0.1:{closed_port()}")
    assert ran.returncode == 6, ran.stdout + ran.stderr
    assert "cannot connect to" in ran.stderr
    assert {e["status"] for e in entries(project).values()} == {"running"}
    assert sim.ledger().tasks_created == 4


# -- item 14: /v1 in the base URL; https to a plain http server --------------------------


def test_base_url_ending_in_v1_is_refused_with_the_fix(project: Project,
                                                       start_sim: StartSim) -> None:
    """The simulator's URL with /v1 appended: exit 2 naming the URL to give instead, before
    anything is sent or recorded as failed."""
    sim = start_sim()
    project.manifest.write_text(FOUR_SHOPS)
    for suffix in ("/v1", "/v1/"):
        for refused in (run(project, "--base-url", sim.base_url + suffix),
                        cli("balance", "--base-url", sim.base_url + suffix, timeout=QUICK)):
            assert refused.returncode == 2, refused.stdout + refused.stderr
            assert f"ends in /v1, which imgspec adds to every request itself: give " \
                   f"{sim.base_url}\n" in refused.stderr
    assert sim.ledger().submissions == 0
    assert entries(project) == {}


def test_https_to_a_plain_http_server_says_it_does_not_speak_tls(
        project: Project, start_sim: StartSim) -> None:
    """https:// naming the simulator's plain http port: one sentence saying the server
    does not speak TLS and to use http://, exit 2, nothing sent or recorded as failed
    (from the balance check, from a submission, and from `imgspec balance`)."""
    sim = start_sim()
    project.manifest.write_text(FOUR_SHOPS)
    tls = sim.base_url.replace("http://", "https://")
    address = sim.base_url.removeprefix("http://")
    for refused in (run(project, "--base-url", tls), run(project, "--base-url", tls,
                                                         "--ignore-balance"),
                    cli("balance", "--base-url", tls, timeout=QUICK)):
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert f"the server at {address} does not speak TLS — use http:// for a local " \
               "simulator" in refused.stderr
        assert "WRONG_VERSION_NUMBER" not in refused.stdout + refused.stderr
    assert sim.ledger().submissions == 0
    assert entries(project) == {}


# -- item 15: `imgspec balance` prints no raw log lines ---------------------------------


def test_balance_with_nothing_listening_says_what_is_wrong_in_one_line() -> None:
    """`imgspec balance` against a closed port: one line naming HOST:PORT and the settings
    to check, exit 6, at once; no stamina log lines."""
    port = closed_port()
    got = cli("balance", "--base-url", f"http://127.0.0.1:{port}", env=NO_PROXY,
              timeout=QUICK)
    assert got.returncode == 6, got.stderr
    assert got.stderr.splitlines() == [
        f"error: balance: cannot connect to 127.0.0.1:{port} (connection refused: nothing "
        "listens there) — check --base-url / APIMART_BASE_URL and the network; nothing was "
        "sent"]


def test_balance_retries_print_no_log_lines(recorder: Recorder) -> None:
    """`imgspec balance` retried through two 503s prints the balance and nothing else: no
    stamina.retry_scheduled lines on the terminal."""
    recorder.statuses = [503, 503, 200]
    got = cli("balance", "--base-url", recorder.url, env=NO_PROXY, timeout=QUICK)
    assert got.returncode == 0, got.stderr
    assert len(recorder.seen) == 3
    assert got.stderr == ""
