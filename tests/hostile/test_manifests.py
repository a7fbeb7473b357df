"""Hostile manifests: every escape found (by hand or by bench/fuzz_manifests.py) stays fixed.

Each is a clean exit 1 with ``FILE:LINE:COL``, what is wrong and what to do; never
a traceback, never exit 70. Add a case here for every new escape.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline.core.manifest.workspace import MemoryWorkspace
from pipeline.errors import ManifestError
from tests.hostile.mutations import example_files, exercise

ROOT = Path(__file__).resolve().parents[2]
HEADER = "version: 1\nname: t\ndefaults: {model: wan2.7-image}\n"


def imgspec(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the real command line (this worktree's code) in ``tmp_path``."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], cwd=tmp_path, capture_output=True,
        text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300, check=False)


def write(tmp_path: Path, body: str, name: str = "m.yaml") -> str:
    """A manifest with the standard header and ``body``; returns its file name."""
    (tmp_path / name).write_text(HEADER + textwrap.dedent(body), encoding="utf-8")
    return name


def assert_refused(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    """Exit 1, each expected fragment in stderr, and no traceback or internal error."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "internal error" not in result.stderr
    for fragment in expected:
        assert fragment in result.stderr


# -- through the command line, one per tracker item -------------------------------------


def test_norway_stays_no_in_prompts_with_a_warning(tmp_path: Path) -> None:
    """`country: [NO, SE]` renders 'flag of NO' and validate warns at NO to quote it (8.7)."""
    name = write(tmp_path, """\
        jobs:
          flags:
            prompt: "flag of {{ country }}"
            matrix:
              country: [NO, SE, DK]
        """)
    validated = imgspec(tmp_path, "validate", name)
    assert validated.returncode == 0, validated.stderr
    assert ("m.yaml:8:17: warning: jobs.flags.matrix.country[0]: NO is read as the text 'NO'"
            in validated.stderr)
    assert "quote it ('NO')" in validated.stderr
    rendered = imgspec(tmp_path, "render", name)
    assert '"prompt": "flag of NO"' in rendered.stdout


def test_watermark_yes_is_refused_with_advice(tmp_path: Path) -> None:
    """`watermark: yes` is the text yes in YAML 1.2: exit 1 at it, saying true or false (8.7)."""
    name = write(tmp_path, "jobs:\n  a: {prompt: x, watermark: yes}\n")
    assert_refused(imgspec(tmp_path, "validate", name),
                   "m.yaml:5:29: error: jobs.a.watermark:", "write true or false")


def test_ratio_without_quotes_is_a_size_with_a_warning(tmp_path: Path) -> None:
    """`size: 16:9` is the ratio, not 969; plan works and warns to quote it (8.7)."""
    name = write(tmp_path, "jobs:\n  a: {prompt: x, size: 16:9}\n")
    planned = imgspec(tmp_path, "plan", name)
    assert planned.returncode == 0, planned.stderr
    assert "jobs.a.size: 16:9 is read as the text '16:9'" in planned.stdout


def test_yaml11_values_in_included_rows_are_warned(tmp_path: Path) -> None:
    """Row files read as YAML follow the same rules as the manifest (8.7)."""
    (tmp_path / "rows.yaml").write_text("- {country: 'SE'}\n- {country: NO}\n")
    name = write(tmp_path, """\
        jobs:
          flags:
            prompt: "flag of {{ country }}"
            matrix: {include: rows.yaml}
        """)
    validated = imgspec(tmp_path, "validate", name)
    assert validated.returncode == 0, validated.stderr
    assert "rows.yaml:2:13: warning: [1].country: NO" in validated.stderr


@pytest.mark.parametrize("command", ["validate", "plan"])
def test_lone_surrogate_in_a_prompt_is_refused(tmp_path: Path, command: str) -> None:
    """`"\\uD800"` in a prompt was a UnicodeEncodeError (exit 70) (9.5)."""
    name = write(tmp_path, 'jobs:\n  a: {prompt: "x\\uD800"}\n')
    assert_refused(imgspec(tmp_path, command, name),
                   "m.yaml:5:15: error: jobs.a.prompt: the text holds a lone surrogate U+D800",
                   "write the character itself")


@pytest.mark.parametrize("command", ["validate", "plan", "render"])
def test_lone_surrogate_made_by_a_template_escape_is_refused(tmp_path: Path,
                                                             command: str) -> None:
    """A Jinja escape (`{{ "\\ud800" }}`) makes a lone surrogate only when rendered (9.5)."""
    name = write(tmp_path, "jobs:\n  a: {prompt: '{{ \"\\ud800\" }}'}\n")
    assert_refused(imgspec(tmp_path, command, name),
                   "m.yaml:5:15: error: jobs.a.prompt: the rendered text is not sendable: the text "
                   "holds a lone surrogate U+D800")


def test_lone_surrogate_in_an_image_path_is_refused(tmp_path: Path) -> None:
    """`"\\uD800.png"` as an input image was a UnicodeEncodeError (exit 70) (9.5)."""
    name = write(tmp_path, 'jobs:\n  a: {prompt: x, image_urls: ["\\uD800.png"]}\n')
    assert_refused(imgspec(tmp_path, "validate", name),
                   "m.yaml:5:31: error: jobs.a.image_urls[0]: the text holds a lone surrogate")


@pytest.mark.parametrize("command", ["validate", "plan"])
def test_nan_budget_is_refused(tmp_path: Path, command: str) -> None:
    """`max_cost: .nan` was an InvalidOperation (exit 70) at plan time (9.5)."""
    name = write(tmp_path, "budget: {max_cost: .nan}\njobs:\n  a: {prompt: x}\n")
    assert_refused(imgspec(tmp_path, command, name),
                   "m.yaml:4:20: error: budget.max_cost: .nan is not a finite number",
                   "write a number")


def test_infinite_price_is_refused_at_its_position(tmp_path: Path) -> None:
    """`.inf` as a price was exit 2 with no position; now exit 1 at the value (9.5)."""
    name = write(tmp_path, "pricing: {wan2.7-image: .inf}\njobs:\n  a: {prompt: x}\n")
    assert_refused(imgspec(tmp_path, "plan", name),
                   "m.yaml:4:25: error: pricing.wan2.7-image: .inf is not a finite number")


def test_huge_price_is_refused(tmp_path: Path) -> None:
    """A price of 1e300 was an InvalidOperation (exit 70) when the plan printed it (9.5)."""
    name = write(tmp_path, "pricing: {wan2.7-image: 1.0e+300}\njobs:\n  a: {prompt: x}\n")
    assert_refused(imgspec(tmp_path, "plan", name),
                   "m.yaml:4:25: error: pricing.wan2.7-image:", "use an amount from 0 to")


@pytest.mark.parametrize("where", ["vars:\n  x: ", "jobs:\n  a:\n    prompt: x\n    matrix:\n"
                                   "      x: "])
def test_5000_deep_nesting_is_refused(tmp_path: Path, where: str) -> None:
    """5,000 nested lists in vars (or a matrix) were a RecursionError (exit 70) (9.5)."""
    body = where + "[" * 5000 + "]" * 5000 + "\n"
    if "jobs" not in where:
        body += "jobs:\n  a: {prompt: x}\n"
    name = write(tmp_path, body)
    assert_refused(imgspec(tmp_path, "validate", name),
                   "the values nest more than 64 levels deep", "flatten the structure")


def test_5000_digit_integer_is_refused(tmp_path: Path) -> None:
    """A 5,001-digit number was a ValueError from int() (exit 70) (9.5)."""
    name = write(tmp_path, "jobs:\n  a: {prompt: x, seed: 1" + "0" * 5000 + "}\n")
    assert_refused(imgspec(tmp_path, "validate", name),
                   "m.yaml:5:24: error: jobs.a.seed: the whole number is outside",
                   "use a smaller number, or quote it")


def test_long_needs_chain_validates(tmp_path: Path) -> None:
    """A 2,000-job `needs:` chain validates (it took half a minute, cubic in the jobs) (9.7)."""
    jobs = "".join(f"  j{i}: {{prompt: x{', needs: [j' + str(i - 1) + ']' if i else ''}}}\n"
                   for i in range(2000))
    name = write(tmp_path, "jobs:\n" + jobs)
    validated = imgspec(tmp_path, "validate", name)
    assert validated.returncode == 0, validated.stderr
    assert "valid (2,000 instances in 2000 jobs)" in validated.stdout


def test_cycle_in_a_long_chain_is_refused_with_advice(tmp_path: Path) -> None:
    """A 2,000-job chain closed into a cycle is exit 1 at a job of it, as before (9.7)."""
    jobs = "".join(f"  j{i}: {{prompt: x, needs: [j{(i - 1) % 2000}]}}\n" for i in range(2000))
    name = write(tmp_path, "jobs:\n" + jobs)
    assert_refused(imgspec(tmp_path, "validate", name),
                   "m.yaml:6:3: error: jobs.j1: jobs form a cycle: j1 -> j2 -> j3",
                   "remove one of the from:/needs: edges")


# -- the growing corpus, in-process -------------------------------------------------------

FILES = MemoryWorkspace(example_files())

# (name, manifest body after the header, line, what the error says). Escapes found by
# bench/fuzz_manifests.py against the code before these fixes are marked "fuzz".
CORPUS: list[tuple[str, str, int, str]] = [
    ("surrogate-in-where (fuzz: identity.fingerprint UnicodeEncodeError)",
     "jobs:\n  a: {prompt: x}\n  b:\n    prompt: y\n    image_urls:\n"
     '      - {from: a, where: {k: "\\udfff"}}\n', 9, "lone surrogate U+DFFF"),
    ("surrogate-in-path (fuzz: workspace.resolve UnicodeEncodeError)",
     'jobs:\n  a: {prompt: x, image_urls: ["assets/\\udfff.webp"]}\n', 5, "lone surrogate"),
    ("surrogate-in-key", 'vars: {"\\ud800": 1}\njobs:\n  a: {prompt: x}\n', 4, "lone surrogate"),
    ("surrogate-in-description", 'description: "\\ud800"\njobs:\n  a: {prompt: x}\n', 4,
     "lone surrogate"),
    ("nul-in-image-path", 'jobs:\n  a: {prompt: x, image_urls: ["assets/car.webp\\0"]}\n', 5,
     "control character U+0000"),
    ("5001-digit-int (fuzz: int() ValueError)", "vars: {x: 1" + "0" * 5000 + "}\n"
     "jobs:\n  a: {prompt: x}\n", 4, "whole number is outside"),
    ("huge-hex-int", "jobs:\n  a: {prompt: x, n: 0x" + "f" * 40 + "}\n", 5,
     "whole number is outside"),
    ("huge-bbox", "jobs:\n  a: {prompt: x, bbox_list: [[[0, 0, 1" + "0" * 30 + ", 1]]]}\n", 5,
     "whole number is outside"),
    ("bad-timestamp-tag (fuzz: AttributeError in the constructor)",
     "vars: {x: !!timestamp x}\njobs:\n  a: {prompt: x}\n", 4, "is not a date or time"),
    ("bad-int-tag", "vars: {x: !!int 12x}\njobs:\n  a: {prompt: x}\n", 4, "is not a whole number"),
    ("deep-vars (fuzz: RecursionError in the composer)",
     "vars: {x: " + "[" * 5000 + "]" * 5000 + "}\njobs:\n  a: {prompt: x}\n", 4, "nest more"),
    ("deep-mapping", "vars: " + "{a: " * 3000 + "1" + "}" * 3000 + "\njobs:\n  a: {prompt: x}\n",
     4, "nest more"),
    ("alias-recursion (fuzz: RecursionError in the builder)",
     "vars: {x: &r [*r]}\njobs:\n  a: {prompt: x}\n", 4, "nest more"),
    ("alias-chain", "vars:\n" + "".join(f"  a{i}: &a{i} [{'*a' + str(i - 1) if i else 1}]\n"
                                        for i in range(100)) + "jobs:\n  a: {prompt: x}\n",
     5, "nest more"),
    ("nan-budget (InvalidOperation at plan)", "budget: {max_cost: .nan}\njobs:\n  a: {prompt: x}\n",
     4, "not a finite number"),
    ("nan-price", "pricing: {wan2.7-image: .NaN}\njobs:\n  a: {prompt: x}\n", 4,
     "not a finite number"),
    ("inf-in-vars", "vars: {x: -.inf}\njobs:\n  a: {prompt: x}\n", 4, "not a finite number"),
    ("overflowing-float", "budget: {max_cost: 1e400}\njobs:\n  a: {prompt: x}\n", 4,
     "not a finite number"),
    ("huge-budget (InvalidOperation in money())",
     "budget: {max_cost: 1.0e+300}\njobs:\n  a: {prompt: x}\n", 4, "more than imgspec can count"),
    ("huge-price", "pricing: {wan2.7-image-pro: 99999999999}\njobs:\n  a: {prompt: x}\n", 4,
     "more than imgspec can count"),
    ("flow-key", "vars: {[a]: 1}\njobs:\n  a: {prompt: x}\n", 4, "key must be a plain scalar"),
]


@pytest.mark.parametrize(("body", "line", "message"),
                         [case[1:] for case in CORPUS], ids=[case[0] for case in CORPUS])
def test_hostile_corpus_is_refused_at_its_line(body: str, line: int, message: str) -> None:
    """Each hostile manifest is one positioned ManifestError, never another exception."""
    with pytest.raises(ManifestError) as info:
        exercise(HEADER + body, FILES)
    (diag,) = info.value.diagnostics
    assert diag.line == line
    assert message in diag.message
    assert diag.hint
