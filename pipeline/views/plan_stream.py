"""A plan too large to hold, written as ``plan --json`` writes a held one.

The head of the plan's JSON (counts, cost) comes before its items, but is known
only once the last item has passed: the items are written to a temporary file as
they are planned, then copied after the head.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING

from pipeline.core.planning.plan import PlanHead
from pipeline.errors import ImgspecError
from pipeline.views.plan import write_plan_document, write_plan_items, write_plan_json

if TYPE_CHECKING:
    from pipeline.operations.project import PlanStream


def write_plan_stream(stream: PlanStream, write: Callable[[str], object]) -> PlanHead:
    """``write_plan_json`` of a plan made item by item, in one pass over the items.

    Each item's JSON line is written to a temporary file as it is planned, and
    dropped; the head is known only once the last has passed, so it is written
    first, then the items are copied after it. Returns the head.
    """
    if stream.whole is not None:
        write_plan_json(stream.whole, write)
        return stream.whole.head()
    try:
        spool = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115 (with below)
    except OSError as exc:
        raise _spool_error(exc) from exc
    with spool:

        def aside(text: str) -> None:
            try:
                spool.write(text)
            except OSError as exc:
                raise _spool_error(exc) from exc

        def copy_items() -> None:
            while True:
                try:
                    chunk = spool.read(1 << 20)
                except OSError as exc:
                    raise _spool_error(exc) from exc
                if not chunk:
                    return
                write(chunk)  # the caller's stream: its errors are its own

        count = write_plan_items(stream, aside)
        head = stream.head()
        try:
            spool.seek(0)
        except OSError as exc:
            raise _spool_error(exc) from exc
        write_plan_document(head, count > 0, copy_items, write)
    return head


def _spool_error(exc: OSError) -> ImgspecError:
    """The temporary file ``write_plan_stream`` keeps the items in failed (a full disk)."""
    return ImgspecError(
        f"cannot keep the plan's items in a temporary file in {tempfile.gettempdir()}: "
        f"{exc.strerror or exc}; free some space there, or set TMPDIR to a folder with room")
