"""Looking into a manifest without a lockfile: its request bodies and its job graph."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.api.source import ManifestSource, place_of
from pipeline.core.manifest.graph import Edge
from pipeline.errors import UsageError


def requests(manifest: ManifestSource, *, root: str | os.PathLike[str] | None = None,
             jobs: Iterable[str] = ()) -> dict[str, Mapping[str, Any]]:
    """The exact request body of each instance (of ``jobs`` only, if given), by key.

    Nothing is sent. Local images appear as ``file:PATH#sha256=...``, upstream
    images as ``upstream:KEY#INDEX``. ``UsageError`` for an unknown job.
    """
    from pipeline.core.expansion.expand import expand

    loaded, workspace = place_of(manifest, root=root).load()
    expansion = expand(loaded, workspace)
    wanted = tuple(jobs)
    unknown = [j for j in wanted if j not in loaded.jobs]
    if unknown:
        raise UsageError(f"unknown job {unknown[0]!r}; jobs: {', '.join(loaded.jobs)}")
    return {inst.key: inst.request for inst in expansion.instances
            if not wanted or inst.job in wanted}


@dataclass(frozen=True, slots=True)
class JobGraph:
    """A manifest's jobs in order, what each waits for, and its instances per job."""

    name: str
    jobs: tuple[str, ...]
    edges: tuple[Edge, ...]
    counts: dict[str, int]


def graph(manifest: ManifestSource, *, root: str | os.PathLike[str] | None = None
          ) -> JobGraph:
    """The job graph of ``manifest`` with instance counts (``ManifestError`` if invalid)."""
    from pipeline.core.expansion.expand import expand
    from pipeline.core.manifest.graph import job_edges

    loaded, workspace = place_of(manifest, root=root).load()
    expansion = expand(loaded, workspace)
    return JobGraph(loaded.name, tuple(expansion.job_order), tuple(job_edges(loaded)),
                    expansion.counts())
