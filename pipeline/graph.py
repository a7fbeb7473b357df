"""The job graph: edges from ``from:`` inputs and ``needs:``, order and cycles.

Drawing it is ``pipeline.views.graph``'s job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pipeline.diagnostics import Diagnostic
from pipeline.errors import ManifestError
from pipeline.model import Manifest

EdgeKind = Literal["images", "needs"]  # images flow downstream, or only the order matters


@dataclass(frozen=True, slots=True)
class Edge:
    """``upstream`` must finish (its matching instances) before ``downstream`` starts."""

    upstream: str
    downstream: str
    kind: EdgeKind


def job_edges(manifest: Manifest) -> list[Edge]:
    """Every job-level edge, in manifest order, without duplicates."""
    edges: dict[tuple[str, str, str], Edge] = {}
    for job in manifest.jobs.values():
        for _, ref in job.upstream_refs:
            edges.setdefault((ref.job, job.id, "images"), Edge(ref.job, job.id, "images"))
        for need in job.needs:
            edges.setdefault((need, job.id, "needs"), Edge(need, job.id, "needs"))
    return list(edges.values())


def job_order(manifest: Manifest) -> list[str]:
    """Jobs with every upstream before its dependants (manifest order breaks ties).

    Raises ``ManifestError`` naming each unknown job reference and each cycle.
    """
    doc = manifest.document
    errors: list[Diagnostic] = []
    known = list(manifest.jobs)
    for job in manifest.jobs.values():
        for _, ref in job.upstream_refs:
            if ref.job not in manifest.jobs:
                errors.append(doc.diagnostic((*ref.path, "from"), f"unknown job {ref.job!r}",
                                             _known_hint(known)))
            elif ref.job == job.id:
                errors.append(doc.diagnostic((*ref.path, "from"),
                                             "a job cannot use its own images",
                                             "take the images from another job"))
        for index, need in enumerate(job.needs):
            if need not in manifest.jobs:
                errors.append(doc.diagnostic((*job.path, "needs", index),
                                             f"unknown job {need!r}", _known_hint(known)))
    if errors:
        raise ManifestError(errors)

    deps = {job_id: set(job.depends_on) for job_id, job in manifest.jobs.items()}
    order: list[str] = []
    remaining = dict(deps)
    while remaining:
        ready = [j for j in known if j in remaining and not (remaining[j] & set(remaining))]
        if not ready:
            raise ManifestError(_cycle_errors(manifest, remaining))
        for job_id in ready:
            order.append(job_id)
            del remaining[job_id]
    return order


def _known_hint(known: Sequence[str]) -> str:
    return f"use one of the jobs: {', '.join(known)}"


def _cycle_errors(manifest: Manifest, remaining: Mapping[str, set[str]]) -> list[Diagnostic]:
    cycle = _find_cycle(remaining)
    text = " -> ".join([*cycle, cycle[0]])
    job = manifest.jobs[cycle[0]]
    return [manifest.document.diagnostic(
        job.path, f"jobs form a cycle: {text}", "remove one of the from:/needs: edges", key=True)]


def _find_cycle(graph: Mapping[str, set[str]]) -> list[str]:
    """One cycle among ``graph`` (job → jobs it depends on), as a list of jobs."""
    start = next(iter(graph))
    path: list[str] = []
    node = start
    while node not in path:
        path.append(node)
        node = sorted(d for d in graph[node] if d in graph)[0]
    return list(reversed(path[path.index(node):]))
