"""What a user sees from `validate` and `plan` for matrix mistakes, through the real command line.

Each test runs `python -m pipeline` in a subprocess with this worktree first on the path.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imgspec(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run imgspec as a user would; bounded so a regression cannot hang the suite."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("IMGSPEC_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def manifest(tmp_path: Path, body: str) -> str:
    (tmp_path / "m.yaml").write_text("version: 1\nname: t\n" + body, encoding="utf-8")
    return "m.yaml"


def test_duplicate_matrix_value_is_refused_by_validate_and_plan(tmp_path: Path) -> None:
    """`a: [x, x, y]`: validate and plan exit 1, naming both positions (issue 8.2)."""
    path = manifest(tmp_path, "defaults: {model: wan2.7-image}\n"
                              "jobs:\n  m:\n    prompt: x\n    matrix: {a: [x, x, y]}\n")
    for command in ("validate", "plan"):
        result = imgspec(command, path, cwd=tmp_path)
        assert result.returncode == 1, result
        assert ("m.yaml:7:21: error: jobs.m.matrix.a[1]: this makes a second instance with the key "
                "of 'm@a=x', which jobs.m.matrix.a[0] (m.yaml:7:18) already makes"
                ) in result.stderr
        assert "Traceback" not in result.stderr + result.stdout


def test_duplicate_csv_row_is_refused_at_both_lines(tmp_path: Path) -> None:
    """A catalogue with a repeated row is refused with the CSV's two line numbers."""
    (tmp_path / "rows.csv").write_text("p\nvase\ncan\nvase\n", encoding="utf-8")
    path = manifest(tmp_path, "defaults: {model: wan2.7-image}\n"
                              "jobs:\n  c: {prompt: '{{ p }}', matrix: {include: rows.csv}}\n")
    result = imgspec("validate", path, cwd=tmp_path)
    assert result.returncode == 1
    assert "rows.csv:4:1: error: [2]: this makes a second instance with the key of 'c@p=vase', " \
           "which [0] (rows.csv:2:1) already makes" in result.stderr


def test_github_matching_merges_and_warns(tmp_path: Path) -> None:
    """Loose GitHub matching: a CSV row `16,6` merges into `node: [12, 16]`, an exclude
    written `OS: LINUX` removes linux, and dead or near-miss entries are warnings on
    validate and plan, which both still succeed (issue 8.3)."""
    (tmp_path / "rows.csv").write_text("node,npm\n16,6\n", encoding="utf-8")
    path = manifest(tmp_path, """\
defaults: {model: wan2.7-image}
jobs:
  j:
    prompt: "{{ node }} {{ os }}"
    matrix:
      node: [12, 16]
      os: [linux, windows]
      exclude: [{OS: LINUX, node: "12"}, {os: macos}]
      include: rows.csv
  k:
    prompt: "{{ flag }}"
    matrix:
      flag: [true]
      include: [{flag: "True", x: 1}]
""")
    result = imgspec("validate", path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "m.yaml: valid (5 instances in 2 jobs)" in result.stdout
    assert ("m.yaml:10:42: warning: jobs.j.matrix.exclude[1]: this exclude entry matches no "
            "combination") in result.stderr
    assert ("m.yaml:16:17: warning: jobs.k.matrix.include[0]: this include row matches no "
            "combination, so it is added as a new one, though it differs from an existing "
            "combination only in case or type (flag: 'True' vs True)") in result.stderr
    plan = imgspec("plan", path, cwd=tmp_path)
    assert plan.returncode == 0, plan.stderr
    assert "warning: jobs.j.matrix.exclude[1]" in plan.stdout + plan.stderr
    keys = [line.split()[2] for line in plan.stdout.splitlines() if "+ new" in line]
    assert keys == ["j@node=12,os=windows", "j@node=16,os=linux,npm=6",
                    "j@node=16,os=windows,npm=6", "k@flag=true", "k@flag=True,x=1"]


@pytest.mark.parametrize(("cap", "expected"), [
    ("100000000000000000000", "m.yaml:3:16: error: max_instances: the whole number is outside"),
    ("1000000000000000000",
     "m.yaml:8:13: error: jobs.a.matrix: the axes multiply to 64,000,000 combinations, "
     "more than the cap of 1,000,000; imgspec holds at most 1,000,000 instances of "
     "one job in memory, whatever max_instances says"),
])
def test_huge_max_instances_is_a_clean_error(tmp_path: Path, cap: str, expected: str) -> None:
    """A huge `max_instances` (1e20: out of range; 1e18: the count) with a 400**3 matrix:
    exit 1 with position and advice, at once, never a MemoryError or traceback (9.5)."""
    axis = "[" + ", ".join(str(i) for i in range(400)) + "]"
    path = manifest(tmp_path, f"max_instances: {cap}\n"
                              "defaults: {model: wan2.7-image}\n"
                              f"jobs:\n  a:\n    prompt: x\n    matrix: {{x: {axis}, y: {axis}, "
                              f"z: {axis}}}\n")
    for command in ("validate", "plan"):
        result = imgspec(command, path, cwd=tmp_path)
        assert result.returncode == 1
        assert expected in result.stderr
        assert "Traceback" not in result.stderr
        assert "internal error" not in result.stderr


def test_missing_model_is_refused_with_advice(tmp_path: Path) -> None:
    """A manifest without model fails validate and plan at the job, saying how to fix it
    (issue 8.7); setting it in defaults makes it valid."""
    path = manifest(tmp_path, "jobs:\n  a: {prompt: x}\n")
    for command in ("validate", "plan"):
        result = imgspec(command, path, cwd=tmp_path)
        assert result.returncode == 1
        assert ("m.yaml:4:3: error: jobs.a: no model: the API needs one in every request (instance "
                "a); set model in defaults: or in the job, e.g. model: wan2.7-image"
                ) in result.stderr
    manifest(tmp_path, "defaults: {model: wan2.7-image}\njobs:\n  a: {prompt: x}\n")
    assert imgspec("validate", path, cwd=tmp_path).returncode == 0
