"""A manifest loaded from disk: the shell reads, the core builds.

The core's loader (``pipeline.core.manifest.load.build_manifest``) takes the
manifest's text, the ``Workspace`` its includes are read from and the schema's
validator; this module reads all three and hands them in.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.core.manifest.load import build_manifest
from pipeline.core.manifest.model import Manifest
from pipeline.core.manifest.workspace import Workspace
from pipeline.shell.store.schemas import MANIFEST_SCHEMA, schema_validator
from pipeline.shell.store.workspace import DirectoryWorkspace, read_manifest_text


def load_manifest(path: Path) -> tuple[Manifest, DirectoryWorkspace]:
    """Read and parse the manifest at ``path``; its folder is the workspace for includes."""
    text = read_manifest_text(path)
    workspace = DirectoryWorkspace(path.parent)
    return parse_manifest(text, file=str(path), workspace=workspace), workspace


def parse_manifest(text: str, *, file: str, workspace: Workspace) -> Manifest:
    """Parse and schema-check manifest text; every problem is reported in one
    ``ManifestError``. Its includes are read from ``workspace``."""
    return build_manifest(text, file=file, workspace=workspace,
                          schema=schema_validator(MANIFEST_SCHEMA))
