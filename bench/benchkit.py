"""What the running benchmarks share: a simulator subprocess, a manifest, a timed child.

Not a benchmark itself. ``run_throughput``, ``run_vs_naive`` and ``shards`` start
the simulator, write a one-job manifest of N instances and time whole processes
the same way; this is that way, once.
"""

from __future__ import annotations

import compileall
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
KEY = "bench-key"
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "APIMART_API_KEY": KEY}


def compile_bytecode() -> None:
    """Compile the package's bytecode, as ``pip install`` does: measured processes then
    start as an installed imgspec starts, not recompiling every module from source
    (which a checkout run with PYTHONDONTWRITEBYTECODE=1 would do, ~55 ms a start)."""
    compileall.compile_dir(ROOT / "pipeline", quiet=1)

MANIFEST = """\
version: 1
name: throughput
max_instances: {n}
defaults: {{model: wan2.7-image, size: 1K}}
jobs:
  shots:
    prompt: "Product shot number {{{{ i }}}}"
    matrix:
      i: {values}
"""


def write_manifest(folder: Path, instances: int) -> Path:
    """``folder/manifests/throughput.yaml``: one job of ``instances`` instances, n=1 each."""
    manifest = folder / "manifests" / "throughput.yaml"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(MANIFEST.format(n=instances, values=json.dumps(list(range(instances)))))
    for leftover in manifest.parent.glob("throughput.lock*"):
        leftover.unlink()
    return manifest


def free_port() -> int:
    """A free loopback port for the simulator."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_simulator(port: int, latency: float | str, *extra: str) -> subprocess.Popen[bytes]:
    """The simulator in a subprocess on ``port``, waited for until it answers.

    ``latency``: seconds, or a ``LOW..HIGH`` range; ``extra``: more simulator options
    (``--latency-shape``, ``--estimate-factor``...).
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "simulator", "--port", str(port),
         "--latency", str(latency), "--api-key", KEY, *extra],
        env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            ledger(f"http://127.0.0.1:{port}")
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the simulator did not start")


def ledger(base: str) -> dict[str, int]:
    """The simulator's counters (``GET /_sim/ledger``)."""
    with urllib.request.urlopen(f"{base}/_sim/ledger", timeout=10) as reply:
        got: dict[str, int] = json.load(reply)
    return got


@dataclass(frozen=True)
class Child:
    """One whole process, timed from outside: what a user waits for and what it used."""

    wall: float  # seconds, start-up included
    cpu: float  # user + system seconds of the process (its threads included)
    peak_mb: float  # peak resident set size


def timed(command: list[str], *, cwd: Path = ROOT, log: Path | None = None) -> Child:
    """Run ``command`` to its end, output to ``log`` (or its standard output discarded,
    its errors kept for the message); exits if it fails."""
    with tempfile.TemporaryFile() as errors:
        out = log.open("wb") if log is not None else None
        try:
            started = time.perf_counter()
            proc = subprocess.Popen(command, env=ENV, cwd=cwd,
                                    stdout=out if out is not None else subprocess.DEVNULL,
                                    stderr=subprocess.STDOUT if out is not None else errors)
            _pid, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - started
        finally:
            if out is not None:
                out.close()
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            errors.seek(0)
            text = log.read_text() if log is not None else errors.read().decode()
            raise SystemExit(f"{command[:4]} failed ({proc.returncode}): {text[-2000:]}")
    return Child(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


# ext4 without a journal skips, when it hands out a new inode, every inode freed in
# the last 60 s (360 s while the freeing is not yet written out): fs/ext4/ialloc.c,
# ``recently_deleted``. A run creates three inodes a task (folder, image, meta.json)
# and its cleanup frees them, so a run started just after another scans past the
# previous run's 90,000 freed inodes on every creation, and is far slower than the
# one before (figures in bench/RESULTS.md). No user's disk looks like that, so the
# benchmarks wait it out.
SETTLE_S = 61.0


def needs_settling(folder: Path) -> bool:
    """True when ``folder`` is on an ext4 filesystem without a journal (Linux only)."""
    try:
        device = folder.stat().st_dev
        block = Path(f"/sys/dev/block/{os.major(device)}:{os.minor(device)}").resolve()
        journal = Path("/sys/fs/ext4") / block.name / "journal_task"
        return journal.read_text().strip() == "<none>"
    except (OSError, ValueError):
        return False


def settle(seconds: float = SETTLE_S) -> None:
    """Write out what earlier runs freed and wait until ext4 reuses it (see SETTLE_S);
    nothing on a filesystem that does not need it."""
    if seconds > 0 and needs_settling(Path(tempfile.gettempdir())):
        os.sync()
        time.sleep(seconds)


def repeat(runs: int, one: Callable[[Path], dict[str, Any]], *,
           settle_s: float = SETTLE_S) -> list[dict[str, Any]]:
    """``one(fresh temporary folder)`` ``runs`` times, each run's figures printed as it ends;
    the filesystem settled (:func:`settle`) before each."""
    figures = []
    for number in range(runs):
        settle(settle_s)
        with tempfile.TemporaryDirectory() as tmp:
            got = one(Path(tmp))
        figures.append(got)
        print(f"run {number + 1}: {json.dumps(got)}", flush=True)
    return figures


def print_spread(runs: list[dict[str, Any]], names: Iterable[str]) -> None:
    """One line per figure: its min, median and max over the runs."""
    for name in names:
        values = [float(run[name]) for run in runs]
        print(f"  {name:18} min {min(values):9.3f}  median {statistics.median(values):9.3f}"
              f"  max {max(values):9.3f}")
