"""Shell completion, as bash runs it: the script imgspec prints, sourced into a real bash."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent  # the environment's `imgspec` script lives beside python


def complete(words: list[str], tmp_path: Path) -> list[str]:
    """What bash offers after ``words`` (the last one being completed)."""
    script = ('eval "$(_IMGSPEC_COMPLETE=bash_source imgspec)"; '
              'COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); '
              '_imgspec_completion imgspec 2>/dev/null; printf "%s\\n" "${COMPREPLY[@]}"')
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(["bash", "-c", script, "bash", *words], cwd=tmp_path, env=env,
                          text=True, capture_output=True, timeout=60, check=True)
    return [line for line in done.stdout.splitlines() if line]


@pytest.mark.parametrize(("words", "offered"), [
    (["imgspec", "pl"], ["plan"]),
    (["imgspec", "lock", ""], ["check", "merge"]),
    (["imgspec", "run", "--con"], ["--concurrency"]),
])
def test_bash_completes_commands_and_options(
        tmp_path: Path, words: list[str], offered: list[str]) -> None:
    """The documented bash set-up completes subcommands and options."""
    assert set(offered) <= set(complete(words, tmp_path))
