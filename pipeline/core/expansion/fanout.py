"""Upstream fan-out: an edit job's rows joined with the instances of the jobs it consumes.

An edit job names upstream jobs (``image_urls: [{from: hero, where: {...}}]``); each
of its rows pairs with every upstream instance that agrees with it on the axes they
share (a natural join), and inherits that instance's other axis values. Pure: the
rows and instances in, the joined rows (or how many there would be) out.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeAlias

from pipeline.core.expansion.identity import canonical_json
from pipeline.core.expansion.instances import Instance
from pipeline.core.manifest.model import UpstreamRef

# One joined row: the axis values it has so far (its own and inherited), and the
# upstream instance chosen for each reference, by the reference's position.
Row: TypeAlias = tuple[dict[str, Any], list[tuple[int, UpstreamRef, Instance]]]


def join_upstream(
    rows: list[Row],
    position: int,
    ref: UpstreamRef,
    matching: Sequence[Instance],
    limit: int,
) -> list[Row] | int:
    """Natural join of the rows so far with the upstream instances of one reference.

    Returns the number of joined rows instead when it is over ``limit``: they are
    counted before any is built, so a join of two large jobs cannot exhaust memory.
    """
    index: dict[tuple[frozenset[str], tuple[str, ...]], dict[str, list[Instance]]] = {}
    groups: dict[frozenset[str], list[Instance]] = {}
    for inst in matching:
        groups.setdefault(frozenset(k for k, _ in inst.matrix), []).append(inst)

    def partners(values: Mapping[str, Any]) -> Iterator[Sequence[Instance]]:
        for keyset, members in groups.items():
            shared = tuple(sorted(keyset & values.keys()))
            table = index.get((keyset, shared))
            if table is None:
                table = {}
                for inst in members:
                    mv = dict(inst.matrix)
                    table.setdefault(canonical_json([mv[k] for k in shared]), []).append(inst)
                index[(keyset, shared)] = table
            yield table.get(canonical_json([values[k] for k in shared]), ())

    count = sum(len(found) for values, _ in rows for found in partners(values))
    if count > limit:
        return count
    out: list[Row] = []
    for values, chosen in rows:
        for found in partners(values):
            for inst in found:
                merged = dict(values)
                for k, v in inst.matrix:
                    merged.setdefault(k, v)
                out.append((merged, [*chosen, (position, ref, inst)]))
    return out
