"""The manifest as declared and validated (the spec): jobs, matrices, references, pricing.

Frozen values, no behaviour beyond small lookups. ("Model" in imgspec means an image
model of the API only: see ``catalogue``.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from pipeline.core.apimart.prices import PriceTable
from pipeline.core.apimart.rules import REQUEST_FIELDS
from pipeline.core.manifest.document import DocPath, Document
from pipeline.core.manifest.moved import Move

MODES = ("text-to-image", "edit", "sequential")
InputsMode = Literal["upload", "inline"]
"""How local input images reach the API (the manifest's ``inputs``)."""
DEFAULT_MAX_INSTANCES = 10_000

# Keys that set a request field when they appear in defaults, a job, or a matrix row.
FIELD_KEYS = frozenset(REQUEST_FIELDS) - {"enable_sequential"} | {"mode"}


@dataclass(frozen=True, slots=True)
class UpstreamRef:
    """``{from: JOB, where: {...}, image: I|all}``: images of another job's instances."""

    job: str
    where: tuple[tuple[str, Any], ...]
    image: int | Literal["all"]
    path: DocPath


@dataclass(frozen=True, slots=True)
class MatrixSpec:
    """A job's matrix as written: axes in order, then exclude and include entries."""

    axes: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    exclude: tuple[Mapping[str, Any], ...] = ()
    include: tuple[Mapping[str, Any], ...] = ()
    # Where include rows came from: the manifest itself or an included CSV/JSON/YAML file.
    include_doc: Document | None = None
    include_base: DocPath = ()


@dataclass(frozen=True, slots=True)
class Job:
    """One job: request fields (defaults merged in), variables, matrix and edges."""

    id: str
    fields: Mapping[str, Any]
    field_paths: Mapping[str, DocPath]
    vars: Mapping[str, Any]
    matrix: MatrixSpec
    needs: tuple[str, ...]
    max_instances: int
    path: DocPath
    description: str = ""

    @property
    def upstream_refs(self) -> tuple[tuple[int, UpstreamRef], ...]:
        """``(position in image_urls, ref)`` for each upstream image input."""
        urls = self.fields.get("image_urls") or ()
        return tuple((i, u) for i, u in enumerate(urls) if isinstance(u, UpstreamRef))

    @property
    def depends_on(self) -> tuple[str, ...]:
        """Every job this one waits for: image sources first, then ``needs``."""
        seen: dict[str, None] = {}
        for _, ref in self.upstream_refs:
            seen.setdefault(ref.job)
        for need in self.needs:
            seen.setdefault(need)
        return tuple(seen)


@dataclass(frozen=True)
class Manifest:
    """A whole manifest, schema-valid, with its source document for error positions."""

    file: str
    name: str
    description: str
    budget: Decimal | None
    vars: Mapping[str, Any]
    pricing: PriceTable
    output_dir: str | None
    max_instances: int
    jobs: Mapping[str, Job]
    document: Document = field(repr=False)
    # How local input images are sent: uploaded once per content (their URL sent) or
    # inline as data URIs. Not part of any fingerprint: the request is the same.
    inputs: InputsMode = "upload"
    # budget.max_total: what the manifest's work may cost in all (recorded spend + plan).
    max_total: Decimal | None = None
    # ``moved:``: old job ids or instance keys whose lock entries follow them to new ones.
    moves: tuple[Move, ...] = ()
