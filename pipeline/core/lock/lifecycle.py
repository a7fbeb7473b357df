"""The life of one lock entry, as named transitions: pure functions from entry to entry.

::

    (none | failed | done, changed) ──begin_attempt──▶ submitting ──running──▶ running
    submitting (same request) ──begin_attempt──▶ submitting (replay: same key, no new charge)
    running ──done──▶ done          running ──failed(refunded)──▶ failed
    submitting ──failed──▶ failed   done ──refreshed / link_forgotten──▶ done
    running ──failed("results")──▶ failed ──done──▶ done   (re-polled: no new charge)

A failed entry records why (``Failure``): only a task that failed, is gone or was
never made is bought again; a paid task whose results could not be fetched is polled
again for fresh links (``repolls``).

The executor decides *when*; this module says *what* each step records, so the
order of writes (the never-pay-twice argument, see ``executor``) reads in one place.
Times are passed in (``now``): nothing here reads a clock.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from collections.abc import Mapping
from dataclasses import replace
from decimal import Decimal
from typing import Any

from pipeline.core.expansion.instances import Instance
from pipeline.core.lock.lockfile import Failure, LockEntry, Output


def idempotency_key(key: str, fp: str, attempt: int) -> str:
    """Stable per instance, request and attempt, so a replay after a crash reuses it.

    Not per request alone: a renamed or copied job finds a result the project holds by
    content (``reuse``), and a body sent under one key must not differ, which the upload
    URLs of a job's input images would (docs/identity.md, "Money is the account's").
    """
    digest = hashlib.sha256(f"{key}\0{fp}\0{attempt}".encode()).hexdigest()
    return f"imgspec-{digest[:40]}"


def is_replay(previous: LockEntry | None, fp: str) -> bool:
    """Whether a submission of request ``fp`` replays ``previous``'s unanswered POST.

    An entry left ``submitting`` (a crash, or a POST whose reply never came) with the
    same request is sent again with the same Idempotency-Key: the API answers with
    the task it already made, and charges nothing new.
    """
    return (previous is not None and previous.status == "submitting"
            and previous.fingerprint == fp and previous.idempotency_key is not None)


def begin_attempt(inst: Instance, request: Mapping[str, Any], fp: str,
                  previous: LockEntry | None, *, reroll: int = 0, now: str) -> LockEntry:
    """The ``submitting`` entry recorded (durably) before a POST.

    A replay keeps the attempt, its key and the time the key was first sent
    (``updated_at``); anything else is a new attempt with a new key. Money charged by
    earlier attempts stays counted, and the images of the last done attempt stay
    recorded until new ones replace them. ``reroll`` counts the re-rolls asked for in
    review, recorded so the next plan derives the same seed.
    """
    sent = now
    if is_replay(previous, fp):
        assert previous is not None
        assert previous.idempotency_key is not None
        attempt, idem = previous.attempts, previous.idempotency_key
        # A ``submitting`` entry's updated_at stays when its key was first sent: the
        # evidence ``paid_elsewhere`` weighs a replay's task against.
        sent = previous.updated_at or now
    else:
        attempt = (previous.attempts if previous else 0) + 1
        idem = idempotency_key(inst.key, fp, attempt)
    return LockEntry(
        key=inst.key, job=inst.job, fingerprint=fp, status="submitting", request=request,
        matrix=dict(inst.matrix), seed=inst.seed, idempotency_key=idem, task_id=None,
        attempts=attempt, last_error=None, cost=Decimal(0),
        charged=previous.charged if previous else Decimal(0),
        created_at=previous.created_at if previous and previous.created_at else now,
        updated_at=sent, outputs=previous.outputs if previous else (), reroll=reroll)


def repolls(entry: LockEntry | None) -> bool:
    """Whether retrying ``entry`` only polls its paid task again for fresh result links
    (free), rather than paying a new attempt."""
    return (entry is not None and entry.status == "failed" and entry.failure == "results"
            and entry.task_id is not None)


def running(entry: LockEntry, task_id: str, cost: Decimal, *, now: str,
            paid_by: str | None = None) -> LockEntry:
    """The API made task ``task_id`` and pre-charged ``cost`` for it.

    ``paid_by``: the task was paid elsewhere (see :func:`paid_elsewhere`); this entry is
    then charged nothing for it, and says where it was paid.
    """
    if paid_by is not None:
        return replace(entry, status="running", task_id=task_id, cost=Decimal(0),
                       updated_at=now, paid_by=paid_by)
    return replace(entry, status="running", task_id=task_id, cost=cost,
                   charged=entry.charged + cost, updated_at=now)


REPLAYED_ELSEWHERE = ("replayed by the API (Idempotency-Replayed): paid by an earlier "
                      "submission of the same key")

# Seconds by which the API's clock may be behind this machine's before a task this
# lockfile made would look made before its own first sending (see ``made_before``).
CLOCK_TOLERANCE = 1


def made_before(created: float | None, first_sent: str | None) -> bool:
    """Whether the API made a task (``created``: its Unix time, as the API reports it)
    before this lockfile first sent the task's key (``first_sent``: a recorded ISO 8601
    time of this machine's clock), beyond what the clocks' difference can explain.

    Both are whole seconds (the API's ``created`` and the lockfile's times), so a
    task made by this sending shows at most a second before it on a clock that is
    behind by ``CLOCK_TOLERANCE``; one made earlier than that was made by someone else's
    sending of the key. Unknown times prove nothing.
    """
    if created is None or first_sent is None:
        return False
    try:
        sent = _dt.datetime.fromisoformat(first_sent.replace("Z", "+00:00"))
    except ValueError:
        return False
    if sent.tzinfo is None:
        return False
    return int(created) < int(sent.timestamp()) - CLOCK_TOLERANCE


def paid_elsewhere(*, replayed: bool, sent_before: bool, recorded: str | None,
                   created: float | None = None, first_sent: str | None = None) -> str | None:
    """Where a just-submitted task was paid if not by this submission, else None.

    Money is the account's: a reply the API marks as a replay (``replayed``) charged
    nothing, unless it replays this lockfile's own earlier sending of the key
    (``sent_before``: a crash, or a reply lost and retried), which was paid and never
    recorded. Another clone of the project on the same account derives the same keys,
    so a key this lockfile sent before may still have made its task elsewhere: when the
    API made the task (``created``) before this lockfile first sent the key
    (``first_sent``), the earlier sending that paid was not ours. ``recorded``: where
    another lockfile of the project (or another entry of this one) already records the
    task id as paid; that settles it either way.
    """
    if recorded is not None:
        return recorded
    if not replayed:
        return None
    if not sent_before:
        return REPLAYED_ELSEWHERE
    if made_before(created, first_sent):
        assert created is not None
        made = _dt.datetime.fromtimestamp(int(created), _dt.UTC).isoformat().replace(
            "+00:00", "Z")
        return (f"replayed by the API (Idempotency-Replayed): the task was made at {made}, "
                f"before this lockfile first sent its key ({first_sent}): paid by another "
                "sending of the same key (another clone of the project?)")
    return None


def failed(entry: LockEntry, message: str, *, failure: Failure, refunded: bool,
           now: str) -> LockEntry:
    """The attempt failed, for ``failure``; ``refunded``: the API gives back a running
    task's pre-charge."""
    cost, charged = entry.cost, entry.charged
    if refunded and entry.status == "running":
        cost, charged = Decimal(0), max(entry.charged - entry.cost, Decimal(0))
    return replace(entry, status="failed", last_error=message, cost=cost, charged=charged,
                   updated_at=now, failure=failure)


def done(entry: LockEntry, outputs: tuple[Output, ...], *, now: str) -> LockEntry:
    """Every image is on disk, verified and in place."""
    return replace(entry, status="done", outputs=outputs, last_error=None, updated_at=now,
                   failure=None)


def refreshed(entry: LockEntry, outputs: tuple[Output, ...], *, now: str) -> LockEntry:
    """Images of a done entry downloaded again from their links (the same images)."""
    return replace(entry, outputs=outputs, updated_at=now)


def link_forgotten(entry: LockEntry, index: int, *, now: str) -> LockEntry:
    """Image ``index``'s link no longer serves it: forget it, so the next plan prices it."""
    outputs = list(entry.outputs)
    outputs[index] = replace(outputs[index], url=None, expires_at=None)
    return replace(entry, outputs=tuple(outputs), updated_at=now)
