"""Start-up: a command imports what it needs when it runs, so `imgspec --help` is quick."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pipeline.cli.main import GRAPH_FORMATS as CLI_GRAPH_FORMATS
from pipeline.views.graph import GRAPH_FORMATS

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("pipeline.core.expansion.expand", "pipeline.core.manifest.load",
         "pipeline.operations.project", "pipeline.shell.http.client",
         "jinja2", "jsonschema", "yaml", "httpx", "aiohttp", "rich", "asyncio")


def test_help_loads_none_of_the_core() -> None:
    """`imgspec --help` runs without importing the core, the run layer or their libraries."""
    probe = ("import runpy, sys\n"
             "sys.argv = ['imgspec', '--help']\n"
             "try:\n    runpy.run_module('pipeline', run_name='__main__')\n"
             "except SystemExit:\n    pass\n"
             f"print('LOADED', sorted(m for m in {HEAVY!r} if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60, check=True)
    assert "Usage: imgspec" in done.stdout
    assert "LOADED []" in done.stdout


def test_graph_formats_written_out_in_the_cli_match_the_views() -> None:
    """The --format choices the CLI declares are the ones the graph views draw."""
    assert CLI_GRAPH_FORMATS == GRAPH_FORMATS
