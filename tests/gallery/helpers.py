"""Shared by the gallery's end-to-end and browser tests: a storefronts project and the CLI."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-gallery-test-9d1e"
REROLLED = "storefront@shop=flower shop,season=spring,model=wan2.7-image"
WAIT = 60.0  # seconds: a hang guard, never a timing assertion


def storefronts(tmp: Path) -> Path:
    """A copy of the repository's manifests/ in ``tmp``; the storefronts manifest's path."""
    shutil.copytree(ROOT / "manifests", tmp / "manifests",
                    ignore=shutil.ignore_patterns("*.lock.json", "*.journal", "*.review.yaml",
                                                  "*.api.jsonl", "*.guard"))
    return tmp / "manifests" / "storefronts.yaml"


def imgspec(*args: str, cwd: Path, check: bool = True,
            timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run the real command line (this worktree's code) in a subprocess."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "IMGSPEC_SIMULATE_LATENCY": "0.05..0.2",
           "APIMART_API_KEY": KEY, "NO_COLOR": "1"}
    done = subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"imgspec {' '.join(args)} exited {done.returncode}:\n"
                             f"{done.stdout}\n{done.stderr}")
    return done


def lock_entries(lockfile: Path) -> dict[str, Any]:
    """The entries of a lockfile."""
    entries: dict[str, Any] = json.loads(lockfile.read_text())["entries"]
    return entries


def review_text(*decisions: tuple[str, int, str, str]) -> str:
    """A review file with these (key, image, sha256, verdict) decisions."""
    lines = ["version: 1", "decisions:"]
    for key, image, sha, verdict in decisions:
        lines += [f"  - key: {json.dumps(key)}", f"    image: {image}", f"    sha256: {sha}",
                  f"    verdict: {verdict}"]
    return "\n".join(lines) + "\n"


class Server:
    """`imgspec review` in a subprocess, its URL read from its first line."""

    def __init__(self, manifest: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "APIMART_API_KEY": KEY}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "review", "--simulate", str(manifest)],
            cwd=manifest.parent.parent, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        lines: queue.Queue[str] = queue.Queue()
        assert self.process.stdout is not None
        stdout = self.process.stdout

        def pump() -> None:
            for line in stdout:
                lines.put(line)

        threading.Thread(target=pump, daemon=True).start()
        assert self.process.stderr is not None
        stderr = self.process.stderr
        self._stderr: list[str] = []

        def pump_stderr() -> None:  # read as it comes, so a full pipe never blocks the server
            for line in stderr:
                self._stderr.append(line)

        self._stderr_pump = threading.Thread(target=pump_stderr, daemon=True)
        self._stderr_pump.start()
        try:
            first = lines.get(timeout=WAIT)
        except queue.Empty:
            self.stop()
            raise AssertionError("imgspec review printed nothing") from None
        self.url = first.split(" at ")[1].strip()

    def stderr(self) -> str:
        """What it has printed to stderr so far."""
        return "".join(self._stderr)

    def stop(self) -> str:
        """Stop it (SIGTERM, as Ctrl-C would); its stderr."""
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=WAIT)
        self._stderr_pump.join(timeout=WAIT)
        return self.stderr()
