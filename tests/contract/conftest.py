"""The contract tests use the end-to-end fixtures (project, simulators, imgspec) and a
way to drive the real command line in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.e2e.conftest import KEY, ROOT, imgspec, project, sim, start_sim

__all__ = ["FOUR_SHOPS", "cli", "imgspec", "project", "sim", "start_sim"]

# One job of four instances (¥0.80), within a budget of 50: what most contract tests run.
FOUR_SHOPS = """\
version: 1
name: shop
budget: {max_cost: 50}
defaults: {model: wan2.7-image, size: 1K}
jobs:
  gen:
    prompt: "A {{ shop }}"
    matrix:
      shop: [bakery, florist, grocer, baker]
"""


def cli(*args: str, env: dict[str, str] | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m pipeline ARGS`` with the test key, importing this worktree's code;
    killed (TimeoutExpired) after ``timeout`` seconds."""
    environ = {**os.environ, "APIMART_API_KEY": KEY, "PYTHONPATH": str(ROOT), **(env or {})}
    environ.pop("IMGSPEC_BALANCE_UNIT", None)
    return subprocess.run([sys.executable, "-m", "pipeline", *args], env=environ, text=True,
                          capture_output=True, timeout=timeout, check=False)
