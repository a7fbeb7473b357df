"""Reply bodies and result URLs, in the shapes the API documents.

Where the published examples disagree (``code`` 200 or ``"success"``; an
image ``url`` as a string or a list of strings), each task picks one variant by
a hash of its id, so a client meets every documented shape, reproducibly.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import re
from typing import Final

from PIL import Image

from pipeline.simulator.tasks import SimPhase, Task

_TOKEN_RE: Final = re.compile(r"(task_[0-9A-Z]{26})-([0-9]{1,2})-([0-9]{1,9})-([0-9a-f]{16})")

_SUBMIT_CODE_BIT: Final = 1
_POLL_CODE_BIT: Final = 2
_URL_LIST_BIT: Final = 4


def json_bytes(data: object) -> bytes:
    """Compact JSON; ASCII-escaped, so even lone surrogates echoed from a request encode."""
    return json.dumps(data, separators=(",", ":")).encode()


def error_body(status: int, message: str, kind: str) -> bytes:
    """The error body the simulator uses for every non-2xx JSON reply."""
    return json_bytes(
        {"code": status, "message": message, "error": {"message": message, "type": kind}}
    )


RESPONSE_VERSION: Final = "2026-07-27"


def versioned_bytes(legacy: bytes, request_id: str) -> bytes:
    """A legacy task reply (``{"code", "data": task}``) in the versioned envelope.

    ``{"version", "request_id", "data": {"id", "generation": {"task", "result"}}}``:
    the task's own fields under ``generation.task``, its images under ``generation.result``.
    """
    data = json.loads(legacy)["data"]
    task = dict(data[0] if isinstance(data, list) else data)
    task_id = task.pop("id", None) or task.pop("task_id")
    task.pop("task_id", None)
    generation: dict[str, object] = {"task": task}
    if "result" in task:
        generation["result"] = task.pop("result")
    return json_bytes({"version": RESPONSE_VERSION, "request_id": request_id,
                       "data": {"id": task_id, "object": "image.generation",
                                "generation": generation}})


def submit_reply(task: Task, status: SimPhase) -> bytes:
    """The reply to an accepted POST /v1/images/generations."""
    code: int | str = 200 if task.variant & _SUBMIT_CODE_BIT else "success"
    return json_bytes(
        {"code": code, "message": "", "data": [{"task_id": task.id, "status": status}]}
    )


# ``-n{serial}`` tells apart uploads of the same size in the same second; names made
# before it had none, and still verify.
_UPLOAD_RE: Final = re.compile(
    r"u([0-9]{1,5})x([0-9]{1,5})-([0-9]{1,12})(?:-n([0-9]{1,12}))?-([0-9a-f]{16})"
    r"\.(png|jpeg|webp|gif)")
_UPLOAD_FORMATS: Final = frozenset({"PNG", "JPEG", "WEBP", "GIF"})


def upload_info(data: bytes) -> tuple[str, int, int] | None:
    """(format, width, height) of an uploadable image (JPEG, PNG, WebP, GIF), else None."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
            fmt, (width, height) = image.format or "", image.size
    except Exception:  # Pillow raises many kinds for a file that is no image
        return None
    return (fmt, width, height) if fmt in _UPLOAD_FORMATS else None


class UploadSigner:
    """Names of uploaded images: the size, upload time and serial inside, signed with
    the seed (verifiable without a table, so a --state simulator knows its own)."""

    def __init__(self, seed: int) -> None:
        self._secret = hashlib.sha256(f"{seed}:uploads".encode()).digest()

    def _sig(self, width: int, height: int, created: int, ext: str, serial: int | None) -> str:
        message = f"{width}x{height}/{created}/{ext}"
        if serial is not None:
            message += f"/{serial}"
        return hmac.new(self._secret, message.encode(), hashlib.sha256).hexdigest()[:16]

    def name(self, width: int, height: int, created: int, ext: str, *, serial: int) -> str:
        """The file name (``u{w}x{h}-{created}-n{serial}-{sig}.{ext}``) of a new upload;
        ``serial`` makes it unique (two uploads of one size in one second)."""
        sig = self._sig(width, height, created, ext, serial)
        return f"u{width}x{height}-{created}-n{serial}-{sig}.{ext}"

    def parse(self, name: str) -> tuple[int, int, int] | None:
        """(width, height, created) of a genuine upload name, else None."""
        match = _UPLOAD_RE.fullmatch(name)
        if match is None:
            return None
        width, height, created = int(match[1]), int(match[2]), int(match[3])
        serial = None if match[4] is None else int(match[4])
        if not hmac.compare_digest(match[5], self._sig(width, height, created, match[6], serial)):
            return None
        return width, height, created


class UrlSigner:
    """Result URL tokens: unguessable without the seed, verifiable without a table."""

    def __init__(self, seed: int) -> None:
        self._secret = hashlib.sha256(f"{seed}:urls".encode()).digest()

    def _sig(self, task_id: str, index: int, epoch: int) -> str:
        message = f"{task_id}/{index}/{epoch}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()[:16]

    def token(self, task_id: str, index: int, epoch: int) -> str:
        """The file token for image ``index`` of a task, for URL generation ``epoch``."""
        return f"{task_id}-{index}-{epoch}-{self._sig(task_id, index, epoch)}"

    def parse(self, token: str) -> tuple[str, int, int] | None:
        """(task id, index, epoch) of a genuine token, else None."""
        match = _TOKEN_RE.fullmatch(token)
        if match is None:
            return None
        task_id, index, epoch = match[1], int(match[2]), int(match[3])
        if not hmac.compare_digest(match[4], self._sig(task_id, index, epoch)):
            return None
        return task_id, index, epoch


def poll_reply(task: Task, now: float, origin: str, ttl: float, signer: UrlSigner) -> bytes:
    """The reply to GET /v1/tasks/{id} at ``now``; URLs point at ``origin``."""
    status, progress = task.status_at(now)
    epoch = task.epoch_at(now, ttl) if status == "completed" else -1
    cached = task.reply_cache
    if cached is not None and cached[0] == epoch and cached[1] == origin:
        return cached[2]
    data: dict[str, object] = {
        "id": task.id,
        "status": status,
        "progress": progress,
        "created": int(task.created_at),
        "estimated_time": task.estimated_time,
    }
    if status == "completed":
        expires = task.expires_at(epoch, ttl)
        images = []
        for i in range(task.n):
            url = f"{origin}/files/{signer.token(task.id, i, epoch)}.png"
            images.append(
                {"url": [url] if task.variant & _URL_LIST_BIT else url, "expires_at": expires}
            )
        data["result"] = {"images": images}
    if status in ("completed", "failed"):
        finished = int(task.done_at)
        if status == "completed":
            data["completed"] = finished
            data["actual_time"] = finished - int(task.created_at)
        else:
            data["error"] = {"message": task.error_message, "code": task.error_code}
    code: int | str = 200 if task.variant & _POLL_CODE_BIT else "success"
    reply = json_bytes({"code": code, "data": data})
    if status in ("completed", "failed"):
        # Finished tasks are polled most and change only when their URLs roll over.
        task.reply_cache = (epoch, origin, reply)
    return reply
