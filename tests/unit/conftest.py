"""Helpers for pure-core tests: manifests from strings, files from memory."""

from __future__ import annotations

import io
import textwrap
from collections.abc import Callable, Mapping

import pytest
from PIL import Image

from pipeline.core.expansion.expand import expand
from pipeline.core.expansion.instances import Expansion
from pipeline.core.manifest.model import Manifest
from pipeline.core.manifest.workspace import MemoryWorkspace
from pipeline.shell.store.manifests import parse_manifest


def png_bytes(width: int = 512, height: int = 512) -> bytes:
    """A small real PNG of the given size."""
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 120, 40)).save(out, format="PNG")
    return out.getvalue()


def manifest_text(body: str) -> str:
    """A manifest with the version/name header and the given (dedented) body."""
    return "version: 1\nname: test\n" + textwrap.dedent(body)


Build = Callable[..., Expansion]


@pytest.fixture
def build() -> Build:
    """Parse and expand a manifest body (header added) against in-memory files."""

    def _build(body: str, files: Mapping[str, bytes | str] | None = None) -> Expansion:
        workspace = MemoryWorkspace(files or {})
        manifest = parse_manifest(manifest_text(body), file="m.yaml", workspace=workspace)
        return expand(manifest, workspace)

    return _build


@pytest.fixture
def parse() -> Callable[..., Manifest]:
    """Parse (without expanding) a manifest body."""

    def _parse(body: str, files: Mapping[str, bytes | str] | None = None) -> Manifest:
        workspace = MemoryWorkspace(files or {})
        return parse_manifest(manifest_text(body), file="m.yaml", workspace=workspace)

    return _parse
