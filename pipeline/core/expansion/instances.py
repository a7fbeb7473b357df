"""What expansion produces: instances (one request each), their image inputs, the expansion.

Values only: ``plan``, ``executor``, ``outputs`` and the views import these types,
never the algorithm that makes them (``expand``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.core.manifest.diagnostics import Diagnostic
from pipeline.core.manifest.model import Manifest


@dataclass(frozen=True, slots=True)
class UrlInput:
    """An http(s) URL, sent as is."""

    url: str

    @property
    def ref(self) -> str:
        """How the input appears in rendered requests and fingerprints."""
        return self.url


@dataclass(frozen=True, slots=True)
class DataInput:
    """A ``data:`` URI written in the manifest; identified by its content hash."""

    uri: str = field(repr=False)
    mime: str
    sha256: str
    width: int
    height: int

    @property
    def ref(self) -> str:
        """How the input appears in rendered requests and fingerprints."""
        return f"data:{self.mime};sha256={self.sha256}"


@dataclass(frozen=True, slots=True)
class FileInput:
    """A local image relative to the manifest; sent as a data URI, identified by content."""

    path: str
    mime: str
    sha256: str
    width: int
    height: int

    @property
    def ref(self) -> str:
        """How the input appears in rendered requests and fingerprints."""
        return f"file:{self.path}#sha256={self.sha256}"


@dataclass(frozen=True, slots=True)
class UpstreamInput:
    """Image ``index`` of upstream instance ``key``; known only once that has run."""

    key: str
    index: int

    @property
    def ref(self) -> str:
        """How the input appears in rendered requests (fingerprints add the content hash)."""
        return f"upstream:{self.key}#{self.index}"


ImageInput = UrlInput | DataInput | FileInput | UpstreamInput


@dataclass(frozen=True, slots=True)
class Instance:
    """One request to make: a job at one set of matrix values."""

    key: str
    job: str
    matrix: tuple[tuple[str, Any], ...]
    request: Mapping[str, Any]  # the wire body; image_urls hold each input's ``ref``
    inputs: tuple[ImageInput, ...]
    seed: int | None
    upstream: tuple[str, ...]  # instance keys whose images this one edits
    needs: tuple[str, ...]  # jobs that must be wholly done first (ordering only)
    # The seed was imgspec's choice (no ``seed:`` in the manifest): a lock entry made
    # when imgspec chose differently keeps its recorded seed (``plan.recorded_seed``).
    derived_seed: bool = False

    @property
    def model(self) -> str:
        """The model the request names."""
        return str(self.request["model"])

    @property
    def n(self) -> int:
        """How many images the request asks for (and is pre-charged for)."""
        return int(self.request.get("n", 1))


@dataclass(frozen=True)
class Expansion:
    """All instances of a manifest, jobs in dependency order, plus the warnings found."""

    manifest: Manifest
    instances: tuple[Instance, ...]
    job_order: tuple[str, ...]
    warnings: tuple[Diagnostic, ...] = ()

    def by_key(self) -> dict[str, Instance]:
        """Instances by key."""
        return {i.key: i for i in self.instances}

    def counts(self) -> dict[str, int]:
        """Instances per job."""
        out = dict.fromkeys(self.job_order, 0)
        for inst in self.instances:
            out[inst.job] += 1
        return out
