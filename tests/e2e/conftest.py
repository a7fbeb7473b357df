"""End-to-end fixtures: a project folder with a manifest, a simulator, and a way to run imgspec."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from PIL import Image

from pipeline.cli.main import cli
from pipeline.simulator import RunningSimulator
from tests.simulator.simkit import loopback_fixtures

KEY = "sk-e2e-SECRET-7f3a9c"
ROOT = Path(__file__).resolve().parents[2]

MANIFEST = """\
version: 1
name: shop
budget: {max_cost: 50}
defaults: {model: wan2.7-image, size: 1K}
vars: {brand: Floralia}
jobs:
  gen:
    prompt: "A {{ shop }} called {{ brand }} in {{ season }}"
    n: 2
    matrix:
      shop: [bakery, florist]
      season: [spring, winter]
  night:
    prompt: "The same {{ shop }} at night"
    image_urls: [{from: gen, where: {season: winter}, image: 1}]
  logo:
    prompt: "A logo for {{ brand }}"
    image_urls: [assets/mark.png]
"""
# One job of two images, in a manifest of its own (``one.yaml``).
ONE_PICTURE = """\
version: 1
name: one
defaults: {model: wan2.7-image, size: 1K}
jobs:
  pic:
    prompt: "A red apple"
    n: 2
"""
INSTANCES = 7
IMAGES = 4 * 2 + 2 + 1


@dataclass
class Project:
    """A throwaway project: manifests/shop.yaml, its assets, lockfile and outputs."""

    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / "manifests" / "shop.yaml"

    @property
    def lockfile(self) -> Path:
        return self.root / "manifests" / "shop.lock.json"

    @property
    def outputs(self) -> Path:
        return self.root / "outputs" / "shop"

    def lock(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.lockfile.read_text())
        return data

    def edit(self, old: str, new: str) -> None:
        text = self.manifest.read_text()
        assert old in text
        self.manifest.write_text(text.replace(old, new))


@pytest.fixture
def project(tmp_path: Path) -> Project:
    """A project with the e2e manifest and a small local input image."""
    (tmp_path / "manifests" / "assets").mkdir(parents=True)
    (tmp_path / "manifests" / "shop.yaml").write_text(MANIFEST)
    buffer = io.BytesIO()
    Image.new("RGB", (320, 320), (30, 90, 160)).save(buffer, format="PNG")
    (tmp_path / "manifests" / "assets" / "mark.png").write_bytes(buffer.getvalue())
    return Project(tmp_path)


start_sim, sim = loopback_fixtures(seed=11, api_key=KEY)


Imgspec = Callable[..., Result]


@pytest.fixture
def imgspec(monkeypatch: pytest.MonkeyPatch) -> Imgspec:
    """Run the CLI in-process with the test key in the environment."""
    monkeypatch.setenv("APIMART_API_KEY", KEY)

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(cli, list(args), catch_exceptions=False)

    return invoke


def run_args(project: Project, sim: RunningSimulator, *extra: str) -> list[str]:
    """Arguments of `imgspec run` against ``sim``."""
    return ["run", str(project.manifest), "--base-url", sim.base_url, "--yes",
            "--concurrency", "4", *extra]


def spawn(args: list[str]) -> subprocess.Popen[str]:
    """Start imgspec in a subprocess (for kill and signal tests)."""
    env = {**os.environ, "APIMART_API_KEY": KEY, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "pipeline", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
