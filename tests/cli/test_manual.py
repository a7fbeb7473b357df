"""The user manual: its getting-started page runs as written, and its generated tables
hold the facts they are generated from."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from pipeline.errors import EXIT_CODES
from pipeline.shell.store.schemas import SCHEMA_NAMES, load_schema
from pipeline.views.reference import exit_codes, manifest_fields

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "getting-started.md"
BIN = Path(sys.executable).parent  # where this environment's `imgspec` script is
# The blocks a reader copies into a shell; a bare ``` block is shown, not run (the one
# that needs a real key).
SH_BLOCK = re.compile(r"^```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)


def commands() -> list[str]:
    """Every command of the page's ```sh blocks, in order."""
    found = []
    for block in SH_BLOCK.findall(PAGE.read_text(encoding="utf-8")):
        found += [line.split("#")[0].strip() for line in block.splitlines()]
    return [c for c in found if c]


def test_the_getting_started_commands_run_in_a_fresh_project(tmp_path: Path) -> None:
    """Each command of the getting-started page exits 0 in a new folder, in order (the
    install line installs this checkout instead of the published package)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("APIMART_API_KEY", "APIMART_BASE_URL")}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com",
               IMGSPEC_SIMULATE_LATENCY="0.05")
    ran = []
    for command in commands():
        args = shlex.split(command)
        if args[:4] == ["python3", "-m", "pip", "install"]:
            assert args[4:] == ["imgspec"], command
            args = [sys.executable, "-m", "pip", "show", "imgspec"]  # installed already
        elif args[0] == "imgspec":
            args = [sys.executable, "-m", "pipeline", *args[1:]]
        done = subprocess.run(args, cwd=tmp_path, env=env, text=True, capture_output=True,
                              timeout=300, check=False)
        assert done.returncode == 0, f"$ {command}\n{done.stdout}\n{done.stderr}"
        ran.append(command)
    assert "imgspec run --simulate manifests/example.yaml" in ran
    assert (tmp_path / "outputs" / "example.simulate" / "index.html").is_file()


def test_the_manifest_reference_lists_every_field_of_the_schema() -> None:
    """The generated field tables name every property the schema defines for the top
    level, jobs and request fields."""
    schema = load_schema(SCHEMA_NAMES[0])
    tables = manifest_fields()
    names = [*schema["properties"], *schema["$defs"]["job"]["properties"],
             *schema["$defs"]["request_fields"]["properties"]]
    assert [n for n in names if f"| `{n}`" not in tables] == []


def test_the_exit_code_page_is_the_table_of_the_code() -> None:
    """The manual's exit-code table has one row per code the command line knows."""
    rows = exit_codes().splitlines()[2:]
    assert [int(row.split("|")[1]) for row in rows] == [code for code, _ in EXIT_CODES]


def yaml_blocks(page: str) -> list[object]:
    """The parsed ```yaml blocks of a manual page."""
    import yaml

    text = (ROOT / "docs" / page).read_text(encoding="utf-8")
    return [yaml.safe_load(block) for block in
            re.findall(r"^```yaml\n(.*?)^```", text, re.MULTILINE | re.DOTALL)]


def test_the_scale_out_recipes_give_each_worker_its_own_shard() -> None:
    """GitLab's parallel job and the Kubernetes Indexed Job parse, and each maps its
    worker index onto --shard K/N with N the number of workers (1-based K)."""
    blocks = yaml_blocks("scale-out.md")
    gitlab = next(b for b in blocks if isinstance(b, dict) and "generate" in b)
    generate = gitlab["generate"]
    assert generate["parallel"] == 4
    assert any('--shard "$CI_NODE_INDEX/$CI_NODE_TOTAL"' in line
               for line in generate["script"])
    assert "shard-*-of-4" in " ".join(gitlab["merge"]["script"])
    job = next(b for b in blocks if isinstance(b, dict) and b.get("kind") == "Job")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    command = " ".join(spec["template"]["spec"]["containers"][0]["args"])
    assert f'--shard "$((JOB_COMPLETION_INDEX + 1))/{spec["completions"]}"' in command
