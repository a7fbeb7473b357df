"""Build a manifest: YAML with positions → JSON Schema → ``Manifest``.

``build_manifest`` is pure: the text, the ``Workspace`` its includes are read from
and the schema's validator are handed in by the shell
(``pipeline.shell.store.manifests``, which reads them from disk).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from decimal import Decimal
from pathlib import PurePosixPath
from typing import Any

import jsonschema

from pipeline.core.apimart.prices import DEFAULT_PRICE_TABLE
from pipeline.core.manifest.diagnostics import Diagnostic
from pipeline.core.manifest.document import DocPath, Document, parse_csv, parse_yaml
from pipeline.core.manifest.model import (
    DEFAULT_MAX_INSTANCES,
    FIELD_KEYS,
    Job,
    Manifest,
    MatrixSpec,
    UpstreamRef,
)
from pipeline.core.manifest.moved import Move, move_errors
from pipeline.core.manifest.schema import validate_document
from pipeline.core.manifest.workspace import Workspace, read_text
from pipeline.errors import ImgspecError, ManifestError

# A price or budget above this is a typo; below it, 10,000 instances x 12 images x
# thousands of jobs still sum exactly within Decimal's 28 digits to the cent.
MAX_AMOUNT = 1_000_000_000


def build_manifest(text: str, *, file: str, workspace: Workspace,
                   schema: jsonschema.Draft202012Validator) -> Manifest:
    """Parse ``text`` and check it against ``schema`` (the manifest's); every problem is
    reported in one ``ManifestError``. Includes are read from ``workspace``."""
    doc = parse_yaml(text, file)
    if not isinstance(doc.data, dict):
        raise ManifestError([doc.diagnostic((), "the manifest must be a mapping",
                                            "start with `version: 1`, `name:` and `jobs:`")])
    errors = validate_document(doc, schema)
    if errors:
        raise ManifestError(errors)
    return _build(doc, workspace)


def _build(doc: Document, workspace: Workspace) -> Manifest:
    data: dict[str, Any] = doc.data
    errors: list[Diagnostic] = []
    defaults: dict[str, Any] = data.get("defaults", {})
    cap = int(data.get("max_instances", DEFAULT_MAX_INSTANCES))
    jobs: dict[str, Job] = {}
    for job_id, raw in data["jobs"].items():
        try:
            jobs[job_id] = _build_job(doc, workspace, job_id, raw, defaults, cap)
        except ManifestError as exc:
            errors.extend(exc.diagnostics)
    errors.extend(_amount_errors(doc, data))
    moves = tuple(Move(raw["from"], raw["to"], ("moved", i))
                  for i, raw in enumerate(data.get("moved", ())))
    errors.extend(move_errors(moves, jobs.keys() | data["jobs"].keys(), doc.diagnostic))
    if errors:
        raise ManifestError(errors)
    pricing = DEFAULT_PRICE_TABLE.with_overrides(
        {k: Decimal(str(v)) for k, v in data.get("pricing", {}).items()}
    )
    budget = data.get("budget", {}).get("max_cost")
    max_total = data.get("budget", {}).get("max_total")
    # Warnings of included row files travel with the manifest's own.
    included = [job.matrix.include_doc for job in jobs.values()
                if job.matrix.include_doc is not None]
    if any(d.warnings for d in included):
        doc = replace(doc, warnings=(*doc.warnings, *(w for d in included for w in d.warnings)))
    return Manifest(
        file=doc.file,
        name=data["name"],
        description=data.get("description", ""),
        budget=None if budget is None else Decimal(str(budget)),
        vars=data.get("vars", {}),
        pricing=pricing,
        output_dir=data.get("output_dir"),
        max_instances=cap,
        jobs=jobs,
        document=doc,
        inputs=data.get("inputs", "upload"),
        max_total=None if max_total is None else Decimal(str(max_total)),
        moves=moves,
    )


def _amount_errors(doc: Document, data: Mapping[str, Any]) -> list[Diagnostic]:
    """Prices and the budget past ``MAX_AMOUNT``: costs summed from them must stay exact.

    The schema has already made them numbers of at least 0, and the loader finite.
    """
    amounts: list[tuple[DocPath, Any]] = [
        (("pricing", model), price) for model, price in data.get("pricing", {}).items()]
    amounts += [(("budget", name), value) for name, value in data.get("budget", {}).items()]
    return sorted((
        doc.diagnostic(path, f"{value} CNY is more than imgspec can count",
                       f"use an amount from 0 to {MAX_AMOUNT:,} CNY")
        for path, value in amounts
        if Decimal(str(value)) > MAX_AMOUNT
    ), key=Diagnostic.sort_key)


def _build_job(
    doc: Document,
    workspace: Workspace,
    job_id: str,
    raw: Mapping[str, Any],
    defaults: Mapping[str, Any],
    cap: int,
) -> Job:
    base: DocPath = ("jobs", job_id)
    fields: dict[str, Any] = {}
    paths: dict[str, DocPath] = {}
    for source, where in ((defaults, ("defaults",)), (raw, base)):
        for key, value in source.items():
            if key in FIELD_KEYS:
                fields[key] = value
                paths[key] = (*where, key)
    if "image_urls" in fields:
        origin = paths["image_urls"]
        fields["image_urls"] = tuple(
            _ref(entry, (*origin, i)) if isinstance(entry, dict) else entry
            for i, entry in enumerate(fields["image_urls"])
        )
    matrix = _matrix(doc, workspace, raw.get("matrix", {}), (*base, "matrix"))
    return Job(
        id=job_id,
        fields=fields,
        field_paths=paths,
        vars=raw.get("vars", {}),
        matrix=matrix,
        needs=tuple(raw.get("needs", ())),
        max_instances=int(raw.get("max_instances", cap)),
        path=base,
        description=raw.get("description", ""),
    )


def _ref(entry: Mapping[str, Any], path: DocPath) -> UpstreamRef:
    image = entry.get("image", 0)
    return UpstreamRef(
        job=entry["from"],
        where=tuple(entry.get("where", {}).items()),
        image="all" if image == "all" else int(image),
        path=path,
    )


def _matrix(doc: Document, workspace: Workspace, raw: Mapping[str, Any],
            path: DocPath) -> MatrixSpec:
    axes = tuple((k, tuple(v)) for k, v in raw.items() if k not in ("include", "exclude"))
    include = raw.get("include", [])
    include_doc: Document | None = None
    include_base: DocPath = (*path, "include")
    if isinstance(include, str):
        include_doc = _include_file(doc, workspace, include, include_base)
        include = include_doc.data
        include_base = ()
    return MatrixSpec(
        axes=axes,
        exclude=tuple(raw.get("exclude", [])),
        include=tuple(include),
        include_doc=include_doc,
        include_base=include_base,
    )


def _include_file(doc: Document, workspace: Workspace, relpath: str, at: DocPath) -> Document:
    """Rows for ``include:`` from a CSV, JSON or YAML file next to the manifest."""
    suffix = PurePosixPath(relpath).suffix.lower()
    if suffix not in (".csv", ".json", ".yaml", ".yml"):
        raise ManifestError([doc.diagnostic(at, f"cannot read rows from {relpath!r}",
                                            "use a .csv, .json, .yaml or .yml file")])
    try:
        text = read_text(workspace, relpath)
    except ImgspecError as exc:
        raise ManifestError([doc.diagnostic(at, str(exc),
                                            "give a file path relative to the manifest")]
                            ) from exc
    display = str(PurePosixPath(doc.file).parent / relpath)
    rows_doc = parse_csv(text, display) if suffix == ".csv" else parse_yaml(text, display)
    rows = rows_doc.data
    if not isinstance(rows, list) or not all(
        isinstance(r, dict) and r and all(isinstance(k, str) for k in r) for r in rows
    ):
        raise ManifestError([rows_doc.diagnostic((), "include rows must be a list of mappings",
                                                 "write one mapping (or CSV row) per "
                                                 "combination")])
    return rows_doc
