"""Every exception imgspec raises on purpose.

The hierarchy::

    ImgspecError                 base: the CLI catches it, prints ``str(err)``, exits ``exit_code``
    ├── UsageError               a bad option value or combination             (exit 2)
    ├── ManifestError            the manifest is invalid; carries diagnostics  (exit 1)
    ├── LockfileError            the lockfile cannot be read or written        (exit 1)
    │   ├── OutputOutsideRoot    it names an output outside the output folder
    │   └── MergeConflict        lockfiles that cannot merge without losing a paid result
    ├── DiffSideInvalid          `imgspec diff`: the manifest is invalid at one side (exit 1)
    ├── InputFileError           a file the manifest names is unreadable or outside its folder
    │   └── InputChanged         an input read for sending is not the one the plan hashed
    ├── LinkLeadsOutside         a symbolic link would lead a read or write out of its folder
    ├── BudgetExceeded           the plan costs more than the budget allows    (exit 3)
    ├── RunGuardHeld             another live run holds this manifest          (exit 5)
    ├── BalanceTooLow            the account's balance cannot cover the plan   (exit 8)
    ├── ItemsFailed              the run finished but some items failed        (exit 4)
    ├── Interrupted              Ctrl-C / SIGTERM stopped the run              (exit 130)
    └── ApiError                 the API said no, or could not be reached      (exit 6)
        ├── AuthError            401 / 403: nothing else can succeed
        ├── BalanceExhausted     402: stop submitting; top up, then run again  (exit 7)
        ├── RequestRejected      400 / 404 / 409 / 422: this item fails, the run goes on
        │   └── BadResultLink    a completed task's result URL imgspec will not fetch:
        │                        the paid task is polled again for good ones
        └── TransientError       408 / 429 / 5xx / network / malformed reply: outcome
            │                    unknown; retried unless ``retryable`` is False (500,
            │                    501, ...: not retried, the next run resumes the item)
            └── ApiUnreachable   no connection to the API: nothing was sent; the run stops
                └── NotTls       https to a server speaking plain http         (exit 2)

Foreign exceptions (yaml, jsonschema, jinja2, aiohttp, OSError) are translated into
these at the module that calls the foreign library, always with ``raise ... from``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from pathlib import Path


# Every exit status of every command, for ``--help`` and the manual. 0 is success; 70
# (EX_SOFTWARE) is the CLI's own answer to an exception that is not one of these.
EXIT_CODES: tuple[tuple[int, str], ...] = (
    (0, "success"),
    (1, "invalid manifest, lockfile or review file; a merge conflict; damaged outputs"),
    (2, "usage error: a bad option, value or combination"),
    (3, "over budget (or above diff --fail-above): nothing was spent"),
    (4, "items failed or are unfinished: rerun to retry or collect them"),
    (5, "another run holds this manifest"),
    (6, "the API refused the key, or could not be reached"),
    (7, "the account's balance ran out: top up, then run again"),
    (8, "the balance cannot cover the plan: nothing was submitted"),
    (70, "internal error: a bug in imgspec (rerun with IMGSPEC_DEBUG=1 and report it)"),
    (130, "interrupted (Ctrl-C, SIGTERM): rerun to resume"),
    (141, "the output's reader went away (e.g. `| head`)"),
)


Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """A problem at ``file:line:column`` (1-based), with the manifest path it concerns."""

    file: str
    line: int
    column: int
    where: str
    message: str
    hint: str = ""
    severity: Severity = "error"
    source_line: str | None = None
    instance: str | None = None
    repeats: int = 1

    def format(self, *, snippet: bool = True) -> str:
        """``FILE:LINE:COL: error: where: what; hint`` (or ``warning:``) plus, when known,
        the source line and a caret: the form compilers and linters print, which editors
        and CI annotations parse."""
        text = (f"{self.file}:{self.line}:{self.column}: {self.severity}: {self.where}: "
                f"{self.message}")
        if self.instance is not None:
            text += (
                f" (instance {self.instance})"
                if self.repeats == 1
                else f" (in {self.repeats} instances, e.g. {self.instance})"
            )
        if self.hint:
            text += f"; {self.hint}"
        if snippet and self.source_line is not None:
            shown, caret = _window(self.source_line, max(self.column - 1, 0))
            gutter = f"{self.line:>5} | "
            text += f"\n{gutter}{shown}\n{' ' * (len(gutter) - 2)}| "
            text += " " * caret + "^"
        return text

    def sort_key(self) -> tuple[str, int, int, str]:
        """Order diagnostics as an editor would list them."""
        return (self.file, self.line, self.column, self.message)


SNIPPET_WIDTH = 100


def _window(line: str, offset: int) -> tuple[str, int]:
    """At most ``SNIPPET_WIDTH`` characters of ``line`` around ``offset``, and the caret's place.

    A minified manifest or a 10,000-deep bracket run is one enormous line; the
    caret's neighbourhood is what helps.
    """
    if len(line) <= SNIPPET_WIDTH:
        return line, offset
    start = max(0, min(offset - SNIPPET_WIDTH // 2, len(line) - SNIPPET_WIDTH))
    end = start + SNIPPET_WIDTH
    before = "..." if start > 0 else ""
    after = "..." if end < len(line) else ""
    return before + line[start:end] + after, len(before) + offset - start


CURRENCY_SIGNS: Mapping[str, str] = MappingProxyType({"CNY": "¥"})


def money(amount: Decimal, currency: str) -> str:
    """``¥1.20`` for CNY, ``1.20 XYZ`` otherwise; always two decimals or more if needed.

    Money is written this one way in every message and view; it lives here, beneath
    everything, so the errors' own messages write it so too.
    """
    cents = amount == amount.quantize(Decimal("0.01"))
    text = f"{amount:.2f}" if cents else f"{amount.normalize()}"
    sign = CURRENCY_SIGNS.get(currency)
    return f"{sign}{text}" if sign else f"{text} {currency}"


class ImgspecError(Exception):
    """Base class: a failure the user can act on; ``str()`` says what to do next."""

    exit_code: int = 1


class UsageError(ImgspecError):
    """A command-line value or combination that cannot work."""

    exit_code = 2


class ManifestError(ImgspecError):
    """The manifest (or a file it includes) is invalid; ``diagnostics`` lists every error."""

    exit_code = 1

    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        self.diagnostics: tuple[Diagnostic, ...] = tuple(diagnostics)
        count = len(self.diagnostics)
        lines = [d.format() for d in self.diagnostics]
        lines.append(f"{count} error{'s' if count != 1 else ''}: fix the lines above and run again")
        super().__init__("\n".join(lines))


class LockfileError(ImgspecError):
    """The lockfile or its journal is unreadable, of an unknown version, or not writable."""

    exit_code = 1


class OutputOutsideRoot(LockfileError):
    """A lockfile names an output file outside the output folder: nothing there is touched."""

    def __init__(self, path: str, root: Path | str, *, key: str | None = None) -> None:
        self.path = path
        self.root = root
        self.key = key
        where = f"entry {key!r}: " if key else ""
        super().__init__(
            f"{where}output path {path!r} lies outside the output folder {root}; imgspec "
            "never reads, replaces or deletes files there. Restore the lockfile from git, "
            "or remove that entry (its image is then generated again)")


class LinkLeadsOutside(ImgspecError):
    """A symbolic link under the project leads out of the folder imgspec confines a path to.

    Git commits symbolic links, so a checkout can hold ``outputs -> /tmp/x``; nothing
    is read or written through such a link. ``advice`` says how to put it right.
    """

    exit_code = 1

    def __init__(self, link: Path, target: str, folder: Path, advice: str) -> None:
        self.link = link
        self.target = target
        self.folder = folder
        super().__init__(
            f"{link} is a symbolic link to {target}, outside {folder}; imgspec reads and "
            f"writes nothing through it. {advice}")


class StoreError(ImgspecError):
    """The object store holding the outputs failed or refused a request (after retries).

    Nothing is recorded for what could not be written: the run leaves the instance
    unfinished, and the next one fetches the paid result again, free.
    """

    exit_code = 1


class MergeConflict(LockfileError):
    """Lockfiles whose entries for ``keys`` cannot be merged without losing a paid result.

    Nothing is written: both sides stay as they were. ``advice`` (set by whoever
    knows where the sides came from: git, or ``--into``) says what to do.
    """

    def __init__(self, keys: Sequence[str], reasons: Sequence[str], *,
                 advice: str = "nothing was written; both sides are unchanged") -> None:
        self.keys: tuple[str, ...] = tuple(keys)
        self.reasons: tuple[str, ...] = tuple(reasons)
        self.advice = advice
        count = len(self.keys)
        lines = [f"conflict: {r}" for r in self.reasons]
        lines.append(f"{count} entr{'y' if count == 1 else 'ies'} cannot be merged without "
                     f"losing a paid result; {advice}")
        super().__init__("\n".join(lines))

    def advised(self, advice: str) -> MergeConflict:
        """The same conflict with the advice for where it happened."""
        return MergeConflict(self.keys, self.reasons, advice=advice)


class DiffSideInvalid(ImgspecError):
    """``imgspec diff``: the manifest does not validate at one side (``side``: the revision,
    or None for the working tree)."""

    exit_code = 1

    def __init__(self, side: str | None, cause: ImgspecError) -> None:
        self.side = side
        self.cause = cause
        where = "in the working tree" if side is None else f"at {side}"
        super().__init__(f"the manifest {where} is invalid:\n{cause}")


class InputFileError(ImgspecError):
    """A file the manifest refers to is missing, unreadable, or outside the manifest's folder."""

    exit_code = 1


class InputChanged(InputFileError):
    """An input image read for sending is not what the plan hashed (or not an image):
    nothing is sent for it, and the item fails; a new plan prices the new file."""


class BudgetExceeded(ImgspecError):
    """The plan (or the spend so far plus the next submission) passes the budget."""

    exit_code = 3

    def __init__(self, message: str, *, cost: Decimal | None = None,
                 budget: Decimal | None = None) -> None:
        self.cost = cost  # what the plan (or the change) would cost
        self.budget = budget  # the limit it passes
        super().__init__(message)


class BalanceTooLow(ImgspecError):
    """The plan costs more than the account's balance (``GET /v1/balance``): nothing sent.

    The facts as attributes: ``needed`` (the plan's cost), ``available`` (the
    balance), ``missing`` (their difference), all in ``currency``.
    """

    exit_code = 8

    def __init__(self, *, needed: Decimal, available: Decimal, currency: str) -> None:
        self.needed = needed
        self.available = available
        self.missing = needed - available
        self.currency = currency
        super().__init__(
            f"the plan costs {money(needed, currency)} but the account's balance is "
            f"{money(available, currency)}: {money(self.missing, currency)} is missing; "
            "nothing was submitted. Top up the account, narrow the plan with --job/--where, "
            "or pass --ignore-balance")


class RunGuardHeld(ImgspecError):
    """Another live imgspec process is running this manifest."""

    exit_code = 5

    def __init__(self, message: str, *, guard: Path, holder_pid: int | None = None) -> None:
        self.guard = guard  # the run guard file
        self.holder_pid = holder_pid  # the process holding it, when it said
        super().__init__(message)


class ItemsFailed(ImgspecError):
    """The run ended with failed items; they are listed and kept for ``--only-failed``."""

    exit_code = 4

    def __init__(self, message: str, *, failed: Sequence[str] = (),
                 unfinished: Sequence[str] = (), blocked: Sequence[str] = ()) -> None:
        self.failed = tuple(failed)  # instance keys whose attempt failed
        self.unfinished = tuple(unfinished)  # left for the next run
        self.blocked = tuple(blocked)  # not started: an upstream did not finish
        super().__init__(message)


class Interrupted(ImgspecError):
    """The user interrupted the run; everything recorded is kept and the next run resumes."""

    exit_code = 130


class ApiError(ImgspecError):
    """The API refused a call or could not be reached."""

    exit_code = 6

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        self.api_message = message
        super().__init__(message if status is None else f"HTTP {status}: {message}")


class AuthError(ApiError):
    """401/403: the key is missing or wrong; nothing else can succeed."""


class BalanceExhausted(ApiError):
    """402: the account cannot pay for more images; topping it up is the remedy.

    Its own exit code, because ``--only-failed`` cannot help: the instances it
    stopped were never submitted, so they are not failed, just left to do.
    """

    exit_code = 7


class RequestRejected(ApiError):
    """400/404/409/422: this request (or task id) is wrong; retrying will not help."""


class BadResultLink(RequestRejected):
    """A completed task's poll reply gives a result URL imgspec will not fetch.

    The request is not wrong and the task is paid: a later poll may well give good
    links, so the task is polled again (never bought again) while the API keeps it.
    """


class TransientError(ApiError):
    """408, 429, 5xx, a network failure or a malformed reply: the outcome is unknown.

    ``retryable``: whether the client retries it at once (408, 429, 502, 503, 504,
    network, malformed: yes; 500 and other 5xx: no, as the official client). Either
    way nothing is failed for it: the run leaves the item unfinished and resumes it.
    """

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None,
        retryable: bool = True,
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after
        self.retryable = retryable


class ApiUnreachable(TransientError):
    """No connection to the API's host could be made (refused, no such host, connect
    timeout, failed TLS handshake): the request never left this machine.

    Retried only once the API has answered in this process (a restart, a blip); a
    first contact that fails is final, since the base URL or the network is wrong
    and retrying would only delay saying so. The run stops: every other request
    would fail the same way.
    """

    def __init__(self, message: str, *, address: str, retryable: bool = True) -> None:
        super().__init__(message, retryable=retryable)
        self.address = address  # HOST:PORT it could not connect to


class NotTls(ApiUnreachable):
    """An https base URL names a server that speaks plain http (a local simulator, say):
    the URL's scheme is wrong, so this is a usage error."""

    exit_code = 2
