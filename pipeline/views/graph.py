"""The job graph drawn for people: plain text, Mermaid or Graphviz dot."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Literal

from pipeline.core.manifest.graph import Edge

GraphFormat = Literal["text", "mermaid", "dot"]
GRAPH_FORMATS: tuple[GraphFormat, ...] = ("text", "mermaid", "dot")


def render_graph(name: str, jobs: Sequence[str], edges: Sequence[Edge],
                 counts: Mapping[str, int], fmt: GraphFormat) -> str:
    """The graph of ``jobs`` (in order) and ``edges``; ``counts`` are instances per job."""
    if fmt == "mermaid":
        lines = ["flowchart LR"]
        lines += [f'  {_ident(j)}["{j} ({counts.get(j, 0)})"]' for j in jobs]
        lines += [
            f"  {_ident(e.upstream)} {'-->' if e.kind == 'images' else '-.->'}"
            f"|{e.kind}| {_ident(e.downstream)}"
            for e in edges
        ]
        return "\n".join(lines) + "\n"
    if fmt == "dot":
        lines = [f"digraph {json.dumps(name)} {{", "  rankdir=LR;"]
        lines += [f"  {json.dumps(j)} [label={json.dumps(f'{j} ({counts.get(j, 0)})')}];"
                  for j in jobs]
        lines += [
            f"  {json.dumps(e.upstream)} -> {json.dumps(e.downstream)}"
            + (" [style=dashed, label=\"needs\"];" if e.kind == "needs" else
               " [label=\"images\"];")
            for e in edges
        ]
        lines.append("}")
        return "\n".join(lines) + "\n"
    into: dict[str, list[Edge]] = {}
    for edge in edges:  # once, not per job: a graph of thousands of jobs draws in linear time
        into.setdefault(edge.downstream, []).append(edge)
    lines = []
    for job_id in jobs:
        ups = into.get(job_id, [])
        arrow = "" if not ups else "  <- " + ", ".join(
            f"{e.upstream} ({e.kind})" for e in ups)
        lines.append(f"{job_id}: {counts.get(job_id, 0)} instance(s){arrow}")
    return "\n".join(lines) + "\n"


def _ident(job_id: str) -> str:
    return "j_" + "".join(c if c.isalnum() else "_" for c in job_id)
