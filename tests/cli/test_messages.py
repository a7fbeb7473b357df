"""What a user reads when something is wrong: through the real command, in a subprocess."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import errors
from pipeline.errors import EXIT_CODES

TIMEOUT = 60


def imgspec(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """This checkout's imgspec, run in ``cwd``."""
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=TIMEOUT, check=False)


def write(folder: Path, text: str) -> str:
    """A manifest ``m.yaml`` in ``folder``; its name."""
    (folder / "m.yaml").write_text(text, encoding="utf-8")
    return "m.yaml"


PALETTE = """\
version: 1
name: t
jobs:
  a:
    model: wan2.7-image-pro
    prompt: x
    vars: {{r: "{second}"}}
    color_palette:
      - {{hex: "#C2D1E6", ratio: "60.00%"}}
      - {{hex: "#636574", ratio: {ratio}}}
      - {{hex: "#CACAD2", ratio: "15.00%"}}
"""


def test_a_tab_in_the_indentation_says_to_use_spaces(tmp_path: Path) -> None:
    """A tab gets PyYAML's words plus what to do: replace it with spaces."""
    name = write(tmp_path, "version: 1\nname: t\njobs:\n  a:\n\tprompt: x\n")
    done = imgspec(tmp_path, "validate", name)
    assert done.returncode == 1
    assert "m.yaml:5:1: error: yaml: invalid YAML: found character '\\t'" in done.stderr
    assert "replace the tab with spaces" in done.stderr


def test_a_dedented_job_field_is_named_as_such_not_as_an_unknown_field(tmp_path: Path) -> None:
    """`matrix:` written at the level of jobs reads as a misplaced field of the job above."""
    name = write(tmp_path, "version: 1\nname: t\njobs:\n  a:\n    prompt: 'x {{ c }}'\n"
                           "  matrix:\n    c: [red]\n  hero:\n    prompt: fine\n")
    done = imgspec(tmp_path, "validate", name)
    assert done.returncode == 1
    assert ("m.yaml:6:3: error: jobs.matrix: 'matrix' is a job's field, but it is indented as "
            "a job of its own; indent it under the job above ('a')") in done.stderr
    assert "unknown field" not in done.stderr


def test_a_job_named_like_a_field_is_fine_when_it_is_a_job(tmp_path: Path) -> None:
    """Only a broken job named like a field is taken for a dedent: a valid one stays a job."""
    name = write(tmp_path, "version: 1\nname: t\ndefaults: {model: wan2.7-image}\njobs:\n"
                           "  model:\n    prompt: a job called model\n")
    assert imgspec(tmp_path, "validate", name).returncode == 0


@pytest.mark.parametrize("ratio", ['"40%"', '"40.0%"'])
def test_the_schema_refuses_the_palette_ratios_the_validator_refuses(
        tmp_path: Path, ratio: str) -> None:
    """A ratio without two decimals is refused by the schema, at the entry at fault."""
    name = write(tmp_path, PALETTE.format(second="x", ratio=ratio))
    done = imgspec(tmp_path, "validate", name)
    assert done.returncode == 1
    assert "m.yaml:10:33: error: jobs.a.color_palette[1].ratio:" in done.stderr
    assert "a percentage with two decimals" in done.stderr.lower()


def test_a_palette_error_points_at_the_entry_at_fault(tmp_path: Path) -> None:
    """A rendered ratio the API refuses is reported at its own entry, not the first."""
    name = write(tmp_path, PALETTE.format(second="40%", ratio='"{{ r }}"'))
    done = imgspec(tmp_path, "validate", name)
    assert done.returncode == 1
    assert "m.yaml:10:9: error: jobs.a.color_palette[1]: entry 2 has ratio '40%'" in done.stderr


def test_every_exit_status_is_in_the_help(tmp_path: Path) -> None:
    """`imgspec --help` lists every code an ImgspecError can exit with, and run's help the
    codes a run can end with."""
    def codes(cls: type[errors.ImgspecError]) -> set[int]:
        return {cls.exit_code}.union(*(codes(sub) for sub in cls.__subclasses__()))

    table = dict(EXIT_CODES)
    assert codes(errors.ImgspecError) <= set(table)
    shown = imgspec(tmp_path, "--help").stdout
    for code, meaning in EXIT_CODES:
        assert f"{code:>3}  {meaning[:40]}" in shown
    run_help = " ".join(imgspec(tmp_path, "run", "--help").stdout.split())
    for code in (0, 1, 2, 3, 4, 5, 6, 7, 8, 130):
        assert f" {code} " in run_help


def test_review_on_a_port_in_use_is_a_usage_error(tmp_path: Path) -> None:
    """`review --port` on a taken port: exit 2 and a line that starts with error:."""
    write(tmp_path, "version: 1\nname: t\ndefaults: {model: wan2.7-image}\n"
                    "jobs:\n  a:\n    prompt: x\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = imgspec(tmp_path, "review", "m.yaml", "--port", str(port))
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"error: cannot listen on 127.0.0.1:{port}")


def test_money_is_written_one_way_in_a_budget_refusal(tmp_path: Path) -> None:
    """A run refused by its budget states both sums as ¥X.XX."""
    write(tmp_path, "version: 1\nname: t\nbudget: {max_cost: 0.3}\n"
                    "defaults: {model: wan2.7-image}\n"
                    "jobs:\n  a:\n    prompt: x\n    n: 2\n    matrix: {c: [1, 2]}\n")
    done = imgspec(tmp_path, "run", "--simulate", "m.yaml")
    assert done.returncode == 3
    assert "¥0.80" in done.stderr + done.stdout
    assert "budget of ¥0.30" in done.stderr + done.stdout
    assert " 0.3;" not in done.stderr


def test_a_reader_that_leaves_early_is_not_an_internal_error(tmp_path: Path) -> None:
    """`imgspec plan --json | head -c 10`: exit 141 quietly, no "internal error"."""
    write(tmp_path, "version: 1\nname: t\ndefaults: {model: wan2.7-image}\n"
                    "jobs:\n  a:\n    prompt: x\n    matrix: {c: [" +
                    ", ".join(str(i) for i in range(1000)) + "]}\n")
    done = subprocess.run(f"{sys.executable} -m pipeline plan --json m.yaml | head -c 10; "
                          "echo \" ${PIPESTATUS[0]}\"", shell=True, executable="/bin/bash",
                          cwd=tmp_path, text=True, capture_output=True, timeout=TIMEOUT,
                          check=False)
    assert done.stdout.endswith(" 141\n"), done.stdout
    assert done.stderr == ""
