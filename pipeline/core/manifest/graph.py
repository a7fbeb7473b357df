"""The job graph: edges from ``from:`` inputs and ``needs:``, order and cycles.

Drawing it is ``pipeline.views.graph``'s job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pipeline.core.manifest.diagnostics import Diagnostic
from pipeline.core.manifest.model import Manifest
from pipeline.errors import ManifestError

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

    return _levels(manifest)


def _levels(manifest: Manifest) -> list[str]:
    """Kahn's algorithm, one level at a time: O(jobs + edges), plus a sort per level.

    A level is every job whose upstreams all sit in earlier levels, listed in manifest
    order; that is the order the plan, the reports and the snapshots have always used.
    """
    index = {job_id: i for i, job_id in enumerate(manifest.jobs)}
    deps = {job_id: set(job.depends_on) for job_id, job in manifest.jobs.items()}
    dependants: dict[str, list[str]] = {job_id: [] for job_id in deps}
    waiting: dict[str, int] = {}
    for job_id, ups in deps.items():
        waiting[job_id] = len(ups)
        for up in ups:
            dependants[up].append(job_id)
    order: list[str] = []
    level = [job_id for job_id, count in waiting.items() if count == 0]
    while level:
        order.extend(level)
        following: list[str] = []
        for job_id in level:
            for down in dependants[job_id]:
                waiting[down] -= 1
                if waiting[down] == 0:
                    following.append(down)
        level = sorted(following, key=index.__getitem__)
    if len(order) < len(deps):
        placed = set(order)
        remaining = {j: ups for j, ups in deps.items() if j not in placed}
        raise ManifestError(_cycle_errors(manifest, remaining))
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
    """One cycle among ``graph`` (job → jobs it depends on), as a list of jobs.

    Every job in ``graph`` waits for another job in it, so following the first
    (by name) of those from the first job must come back to a job already seen.
    """
    start = next(iter(graph))
    seen: dict[str, int] = {}
    path: list[str] = []
    node = start
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = min(d for d in graph[node] if d in graph)
    return list(reversed(path[seen[node]:]))
