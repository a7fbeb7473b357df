"""The simulator command: starts, prints its URL, stops cleanly on Ctrl-C."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.timeout(60)

COMMAND = [sys.executable, "-m", "pipeline.simulator"]


def test_serves_and_stops_cleanly_on_ctrl_c() -> None:
    """The command prints its base URL, serves, and exits 0 without a traceback on SIGINT."""
    proc = subprocess.Popen(
        [*COMMAND, "--port", "0", "--latency", "0", "--faults", "poll.5xx=0.1", "--seed", "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+)", first)
        assert match, first
        base_url = match[1]
        ledger = httpx.get(base_url + "/_sim/ledger", timeout=5).json()
        assert ledger["submissions"] == 0
        reply = httpx.post(
            base_url + "/v1/images/generations",
            json={"model": "wan2.7-image", "prompt": "x"},
            headers={"Authorization": "Bearer sim-key"},
            timeout=5,
        )
        assert reply.status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "simulator stopped" in out


def test_sigterm_stops_cleanly() -> None:
    """SIGTERM also stops the server with exit 0 and no traceback."""
    proc = subprocess.Popen(
        [*COMMAND, "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert "listening on" in proc.stdout.readline()
    proc.terminate()
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--faults", "bogus=1"], "valid faults are"),
        (["--latency", "slow"], "latency"),
        (["--stuck-factor", "0.5"], "stuck_factor"),
        (["--balance", "lots"], "balance"),
    ],
    ids=["bad-fault", "bad-latency", "bad-stuck-factor", "bad-balance"],
)
def test_bad_options_exit_2_with_message(args: list[str], fragment: str) -> None:
    """Bad option values exit 2 with a one-line reason, never a traceback."""
    done = subprocess.run(
        [*COMMAND, "--port", "0", *args], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 2
    assert fragment in done.stderr
    assert "Traceback" not in done.stderr


def test_port_in_use_is_a_clear_error() -> None:
    """A taken port is reported as a usage error suggesting another port."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [*COMMAND, "--port", str(port)], capture_output=True, text=True, timeout=30, check=False
        )
    assert done.returncode == 2
    assert "cannot listen" in done.stderr
    assert "Traceback" not in done.stderr


def test_help_lists_fault_kinds() -> None:
    """--help documents the options and every fault kind."""
    done = subprocess.run(
        [*COMMAND, "--help"], capture_output=True, text=True, timeout=30, check=True
    )
    for fragment in ("--latency", "--faults", "--stuck-factor", "--state", "download.truncate",
                     "poll.429", "poll.bad_url", "download.drip"):
        assert fragment in done.stdout


def test_state_option_keeps_the_ledger_across_restarts(tmp_path: Path) -> None:
    """With --state, a restarted simulator command still knows its tasks and charges."""

    def serve_once(submit: bool) -> dict[str, object]:
        proc = subprocess.Popen([*COMMAND, "--port", "0", "--state", str(tmp_path / "s.jsonl")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            match = re.search(r"(http://127\.0\.0\.1:\d+)", proc.stdout.readline())
            assert match
            if submit:
                reply = httpx.post(match[1] + "/v1/images/generations",
                                   json={"model": "wan2.7-image", "prompt": "x", "n": 2},
                                   headers={"Authorization": "Bearer sim-key"}, timeout=5)
                assert reply.status_code == 200
            ledger: dict[str, object] = httpx.get(match[1] + "/_sim/ledger", timeout=5).json()
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        return ledger

    serve_once(submit=True)
    ledger = serve_once(submit=False)
    assert (ledger["tasks_created"], ledger["images_charged"]) == (1, 2)
    assert ledger["submissions"] == 1
