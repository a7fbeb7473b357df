"""``validate``: is a manifest valid, and what does it say about itself."""

from __future__ import annotations

import os
from dataclasses import dataclass

from pipeline.api.source import ManifestSource, place_of
from pipeline.core.manifest.diagnostics import Diagnostic
from pipeline.errors import ManifestError


@dataclass(frozen=True, slots=True)
class Validation:
    """A valid manifest: its size, and the warnings it deserves."""

    instances: int
    jobs: int
    warnings: tuple[Diagnostic, ...]


def check(manifest: ManifestSource, *, root: str | os.PathLike[str] | None = None
          ) -> Validation:
    """Check ``manifest`` against the schema and the API's rules, and expand it.

    Raises ``ManifestError`` (its ``diagnostics`` list every error) when it is
    invalid, and another ``ImgspecError`` when it cannot be read.
    """
    from pipeline.core.expansion.expand import expand
    from pipeline.core.lock.lockfile import Lockfile
    from pipeline.core.lock.moves import plan_moves

    place = place_of(manifest, root=root)
    loaded, workspace = place.load()
    expansion = expand(loaded, workspace)
    moved = plan_moves(loaded.moves, Lockfile(manifest=place.manifest.name),
                       keys={i.key for i in expansion.instances},
                       jobs=loaded.jobs, diagnostic=loaded.document.diagnostic)
    return Validation(len(expansion.instances), len(expansion.job_order),
                      (*expansion.warnings, *moved.warnings))


def validate(manifest: ManifestSource, *, root: str | os.PathLike[str] | None = None
             ) -> list[Diagnostic]:
    """Every error (``severity == "error"``) of an invalid manifest, or the warnings of a
    valid one; an empty list is a clean manifest.

    ``manifest``: a path, or a mapping built in code (placed in ``root``, default the
    current directory). Raises ``ImgspecError`` only when the manifest cannot be read.
    """
    try:
        return list(check(manifest, root=root).warnings)
    except ManifestError as exc:
        return list(exc.diagnostics)
