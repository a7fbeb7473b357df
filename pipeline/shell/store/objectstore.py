"""Outputs in an object store (S3, GCS, Azure, or a ``file://`` folder) through fsspec.

The layout is the output folder's (``pipeline.shell.store.layout``), under the URL's
prefix. What a folder promises, a store promises too:

* an image is recorded only once its object is confirmed: a download lands in a
  local staging file, is uploaded with its sha256 as object metadata, and what the
  store holds is checked before ``install`` returns (S3's checksum of the PUT or the
  metadata read back, the MD5 GCS and Azure keep, a ``file://`` folder's bytes); a
  PUT whose reply is lost is simply made again (same key, same bytes);
* an upload that keeps failing raises ``StoreError``: the run leaves the instance
  unfinished and the next run fetches the paid result again, free;
* lockfile paths are relative to the prefix and confined to it, lexically: no
  ``..``, no absolute path, no other URL;
* credentials come from the filesystem's own chain (for S3 the AWS one, with
  ``AWS_ENDPOINT_URL``); errors are translated here, at one boundary, into
  ``StoreError`` messages from which secrets are scrubbed.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import posixpath
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path, PurePath, PurePosixPath
from typing import Any, Literal, TypeVar

from pipeline.core.expansion.instances import Expansion, Instance
from pipeline.core.lock.lockfile import LockEntry, Output
from pipeline.errors import OutputOutsideRoot, StoreError, UsageError
from pipeline.shell.store.layout import (
    VerifyProblem,
    image_name,
    index_chunks,
    index_head,
    index_instances,
    index_problem,
    instance_folder,
    meta_text,
)
from pipeline.shell.store.store import EXTRAS, StoreURL, cache_folder, storage_kwargs

T = TypeVar("T")
CONTENT_TYPES = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp",
                 "bmp": "image/bmp", "json": "application/json"}
# Errors a retry cannot mend: the request was understood and refused.
_FINAL = frozenset({"NoCredentialsError", "PartialCredentialsError", "NoRegionError",
                    "InvalidAccessKeyId", "SignatureDoesNotMatch", "NoSuchBucket",
                    "ParamValidationError", "ValueError", "TypeError"})
# Secrets a message could carry: query-string signatures and credentials.
_SIGNED = re.compile(r"(Signature|X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|"
                     r"AWSAccessKeyId|sig|se|sv)=[^&\s'\"]+", re.IGNORECASE)
_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
               "AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_CONNECTION_STRING",
               "AZURE_CLIENT_SECRET", "GOOGLE_APPLICATION_CREDENTIALS_JSON")
_BATCH = 32  # objects fetched at once by ``verify`` (images of ~1 MB: memory stays small)


def store_md5(info: Mapping[str, Any]) -> bytes | None:
    """The MD5 a bucket keeps of an object, from fsspec's ``info`` of it: GCS's
    ``md5Hash`` (base64), Azure's ``content_settings.content_md5`` (bytes); None when
    there is none (a composite GCS object, a block blob uploaded in parts)."""
    raw = info.get("md5Hash")
    if isinstance(raw, str) and raw:
        with contextlib.suppress(ValueError):
            return base64.b64decode(raw, validate=True)
        return None
    settings = info.get("content_settings")
    kept = (settings.get("content_md5") if isinstance(settings, Mapping)
            else getattr(settings, "content_md5", None))
    return bytes(kept) if isinstance(kept, (bytes, bytearray)) and kept else None


class _Unconfirmed(Exception):
    """The object read back after a PUT is not the one written (size or sha256)."""


class ObjectStore:
    """One manifest's outputs under a store URL; lockfile paths are relative to it."""

    def __init__(self, url: StoreURL, *, options: Mapping[str, Any] | None = None,
                 cache: Path | None = None, attempts: int = 4, backoff: float = 0.25) -> None:
        self.url = url
        self.root = url.text
        self.cache = cache if cache is not None else cache_folder(url)
        self.attempts = attempts
        self.backoff = backoff
        self._options = dict(options or {})
        self._fs: Any = None
        self._base = ""
        self._listing: dict[str, int] | None = None
        self._lock = threading.Lock()

    # -- the filesystem and the one error boundary --------------------------------------

    @property
    def fs(self) -> Any:
        """The fsspec filesystem (made on first use: imported only for store URLs)."""
        with self._lock:
            if self._fs is None:
                self._fs = self._connect()
            return self._fs

    def _connect(self) -> Any:
        protocol = self.url.protocol
        advice = f"pip install 'imgspec[{EXTRAS[protocol]}]'"
        try:
            import fsspec  # an optional extra: imported only for a store URL

            extra: dict[str, Any] = {"auto_mkdir": True} if protocol == "file" else {}
            fs = fsspec.filesystem(protocol, skip_instance_cache=True,
                                   use_listings_cache=False,
                                   **extra, **storage_kwargs(self._options))
        except ImportError as exc:
            raise UsageError(f"output_dir {self.root} needs the {protocol}:// filesystem: "
                             f"{advice}") from exc
        except Exception as exc:
            raise StoreError(f"{self.root}: the store cannot be opened "
                             f"({_describe(exc)})") from exc
        self._base = str(fs._strip_protocol(self.root)).rstrip("/")
        return fs

    def _call(self, what: str, work: Callable[[], T], *, reading: bool = True) -> T:
        """``work()``, retried on failures that may pass; ``StoreError`` when it cannot be done.

        A read's ``FileNotFoundError`` passes through: callers decide what a missing
        object means. For a write (``reading=False``) it means the bucket is missing.
        """
        for attempt in range(self.attempts):
            try:
                return work()
            except FileNotFoundError as exc:
                if reading:
                    raise
                raise StoreError(f"{self.root}: {what} failed ({_describe(exc)})") from exc
            except Exception as exc:
                final = type(exc).__name__ in _FINAL or isinstance(exc, PermissionError)
                if final or attempt == self.attempts - 1:
                    raise StoreError(f"{self.root}: {what} failed ({_describe(exc)})") from exc
                time.sleep(self.backoff * 2 ** attempt)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _path(self, rel: str) -> str:
        self.fs  # noqa: B018 (sets ``_base``)
        return f"{self._base}/{rel}"

    def _put(self, rel: str, data: bytes, *, sha256: str) -> None:
        """Write ``data`` at ``rel``, confirmed: by the store's own digest of what it
        received (S3's reply: the SHA-256 checksum, or the ETag of a plain PUT, the MD5 of
        the body), else by reading back its size and digest (S3: the sha256 metadata;
        GCS and Azure: the MD5 they keep of the object; a ``file://`` folder: its bytes)."""
        path = self._path(rel)
        kwargs: dict[str, Any] = {}
        md5 = ""
        if self.url.protocol == "s3":
            # S3 checks the body against this checksum and refuses a PUT that differs.
            checksum = base64.b64encode(bytes.fromhex(sha256)).decode()
            md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
            kwargs = {"Metadata": {"sha256": sha256}, "ChecksumSHA256": checksum,
                      "ContentType": CONTENT_TYPES.get(rel.rsplit(".", 1)[-1],
                                                       "application/octet-stream")}

        def put_and_confirm() -> None:
            reply = self.fs.pipe_file(path, data, **kwargs)
            if md5 and isinstance(reply, dict) and (
                    reply.get("ChecksumSHA256") == kwargs["ChecksumSHA256"]
                    or str(reply.get("ETag", "")).strip('"') == md5):
                return  # the bytes the store holds are these (and the metadata went along)
            # An encrypted (SSE-KMS) object's ETag is no MD5; other stores reply less.
            size, recorded = self._head(path)
            if size != len(data):
                raise _Unconfirmed(f"the object read back holds {size} bytes, "
                                   f"not the {len(data)} written")
            if self.url.protocol == "s3":
                if recorded != sha256:
                    raise _Unconfirmed("the object read back is not the one written")
            elif not self._same_bytes(path, data, sha256):
                raise _Unconfirmed("the object read back is not the one written")

        self._call(f"uploading {rel}", put_and_confirm, reading=False)
        with self._lock:
            if self._listing is not None:
                self._listing[rel] = len(data)

    def _same_bytes(self, path: str, data: bytes, sha256: str) -> bool:
        """Whether the object at ``path`` holds ``data``: a folder's file is read back
        (a local read), a bucket's object by the MD5 its store keeps (when it keeps one)."""
        if self.url.protocol == "file":
            return hashlib.sha256(self.fs.cat_file(path)).hexdigest() == sha256
        kept = store_md5(self.fs.info(path))
        return kept is None or kept == hashlib.md5(data, usedforsecurity=False).digest()

    def _head(self, path: str) -> tuple[int, str | None]:
        """The object's size, and the sha256 its metadata records (S3 only)."""
        if self.url.protocol == "s3":
            bucket, _, key = path.partition("/")
            head = self.fs.call_s3("head_object", Bucket=bucket, Key=key)
            meta = head.get("Metadata") or {}
            return int(head.get("ContentLength", -1)), meta.get("sha256")
        return int(self.fs.info(path).get("size") or 0), None

    def _objects(self) -> dict[str, int]:
        """Every object under the prefix (relative name → size), listed once per command."""
        with self._lock:
            if self._listing is not None:
                return self._listing
        base = self._path("").rstrip("/")
        try:
            found = self._call("listing the store", lambda: self.fs.find(base, detail=True))
        except FileNotFoundError:
            found = {}
        prefix = base + "/"
        listing = {str(name)[len(prefix):]: int(info.get("size") or 0)
                   for name, info in found.items()
                   if str(name).startswith(prefix) and info.get("type", "file") == "file"}
        with self._lock:
            self._listing = listing
        return listing

    def forget_listing(self) -> None:
        """List the store again on the next question (after another process wrote to it)."""
        with self._lock:
            self._listing = None

    # -- paths -------------------------------------------------------------------------

    @property
    def shown(self) -> str:
        """The store URL, as messages name it."""
        return self.root

    def confined(self, stored: str) -> str | None:
        """The object name (relative to the prefix) a stored path names, or None outside it."""
        if (not stored or "\\" in stored or "\0" in stored or stored.startswith("/")
                or "://" in stored):
            return None
        rel = posixpath.normpath(stored)
        if rel in (".", "..") or rel.startswith("../"):
            return None
        return rel

    def absolute(self, stored: str) -> str:
        """``confined``, or ``OutputOutsideRoot``."""
        rel = self.confined(stored)
        if rel is None:
            raise OutputOutsideRoot(stored, self.root)
        return rel

    def relative(self, path: PurePath) -> str:
        """A final object name (from ``install``) as the lockfile stores it."""
        return path.as_posix()

    def url_of(self, stored: str) -> str:
        """The full URL of a stored path (confined)."""
        return f"{self.root}/{self.absolute(stored)}"

    def check_entries(self, entries: Iterable[LockEntry]) -> None:
        """Refuse a lockfile any of whose output paths lies outside the prefix."""
        for entry in entries:
            for output in entry.outputs:
                if self.confined(output.path) is None:
                    raise OutputOutsideRoot(output.path, self.root, key=entry.key)

    # -- a run's writes ----------------------------------------------------------------

    def _staging(self, job: str, key: str) -> Path:
        return self.cache / "staging" / instance_folder(job, key, root=self.root)

    def check_folders(self, instances: Iterable[tuple[str, str]]) -> None:
        """Refuse instance names that are not plain (nothing links in a store), and a store
        that cannot be listed (no such bucket, no credentials, no connection): before a
        run pays for results it could not keep."""
        for job, key in instances:
            instance_folder(job, key, root=self.root)
        if not self._objects() and self.url.protocol != "file":
            # An empty listing is also what a missing bucket gives: ask for the bucket.
            bucket = self._path("").split("/", 1)[0]
            if not self._call("finding the bucket", lambda: self.fs.exists(bucket)):
                raise StoreError(f"{self.root}: the bucket {bucket} does not exist (or "
                                 "these credentials cannot see it); nothing was spent")

    def clean_temp_files(self, instances: Iterable[tuple[str, str]]) -> None:
        """Remove staged downloads an interrupted run left for these (job, key) instances."""
        for job, key in instances:
            folder = self._staging(job, key)
            try:
                leftovers = [p for p in folder.iterdir() if p.name.endswith(".part")]
            except OSError:
                continue
            for path in leftovers:
                path.unlink(missing_ok=True)

    def temp_path(self, job: str, key: str, index: int) -> Path:
        """A fresh local staging file for a download (the downloader makes its folder)."""
        return self._staging(job, key) / f".{index}.{secrets.token_hex(4)}.part"

    def install(self, temp: Path, job: str, key: str, index: int, fmt: str, *,
                sha256: str, previous: str | None = None) -> PurePosixPath:
        """Upload a verified download to ``<job>/<instance>/<i>.<ext>`` and confirm it.

        The staging file goes either way (a failed upload is downloaded again, free).
        ``previous``, the object this slot held before under another name (another
        format), is deleted once the new one is confirmed.
        """
        rel = f"{instance_folder(job, key, root=self.root)}/{image_name(index, fmt)}"
        try:
            self._put(rel, temp.read_bytes(), sha256=sha256)
        finally:
            temp.unlink(missing_ok=True)
        old = self.confined(previous) if previous is not None else None
        if old is not None and old != rel:
            # An object left over is listed by nothing and harms nothing.
            with contextlib.suppress(StoreError):
                self.remove_images([old])
        return PurePosixPath(rel)

    def write_meta(self, inst: Instance, entry: LockEntry, manifest: str) -> None:
        """``meta.json`` beside an instance's images."""
        folder = instance_folder(inst.job, inst.key, root=self.root)
        files = [posixpath.basename(self.absolute(o.path)) for o in entry.outputs]
        data = meta_text(inst, entry, manifest, files).encode()
        self._put(f"{folder}/meta.json", data, sha256=hashlib.sha256(data).hexdigest())

    def write_index(self, expansion: Expansion, entries: Mapping[str, LockEntry],
                    manifest: str) -> str:
        """``index.json`` at the prefix; its URL."""
        text = "".join(index_chunks(index_head(expansion, manifest),
                                    index_instances(expansion, entries, self._index_images)))
        data = text.encode()
        self._put("index.json", data, sha256=hashlib.sha256(data).hexdigest())
        return f"{self.root}/index.json"

    def _index_images(self, entry: LockEntry | None) -> list[str]:
        if entry is None or entry.status != "done":
            return []
        return [self.absolute(o.path) for o in entry.outputs]

    def remove_images(self, stored: Iterable[str]) -> None:
        """Delete the objects of stored paths inside the prefix (others are left alone)."""
        names = [rel for rel in (self.confined(s) for s in stored) if rel is not None]
        if not names:
            return
        paths = [self._path(rel) for rel in names]
        self._call("deleting objects", lambda: self.fs.rm(paths), reading=False)
        with self._lock:
            if self._listing is not None:
                for rel in names:
                    self._listing.pop(rel, None)

    # -- reading -----------------------------------------------------------------------

    def present(self, *, rehash: bool = False) -> Callable[[Output], bool]:
        """The plan's predicate: the object is listed with the recorded size (and, with
        ``rehash``, holds the recorded sha256). One listing of the prefix per command."""

        def present(output: Output) -> bool:
            rel = self.confined(output.path)
            if rel is None or self._objects().get(rel) != output.bytes:
                return False
            return not rehash or self._sha256(rel) == output.sha256

        return present

    def _sha256(self, rel: str) -> str | None:
        data = self._read(rel)
        return None if data is None else hashlib.sha256(data).hexdigest()

    def _read(self, rel: str) -> bytes | None:
        """The bytes of the object ``rel`` (confined already); None if it is not there."""
        try:
            data: bytes = self._call(f"reading {rel}",
                                     lambda: self.fs.cat_file(self._path(rel)))
        except FileNotFoundError:
            return None
        return data

    def move_object(self, src: str, dst: str, sha256: str) -> Literal["new", "old"]:
        """Move one image (object names, confined) if it is the recorded one: "new" where
        the entry names it now, "old" when it stays (``dst`` holds another image).

        A store has no rename: the copy is written and confirmed before the original
        goes, so a move stopped half-way leaves the image in one place or both.
        """
        there = self._read(dst)
        if there is not None and hashlib.sha256(there).hexdigest() == sha256:
            if self._sha256(src) == sha256:
                self.remove_images([src])
            return "new"
        data = self._read(src)
        if data is None:
            return "new"  # gone: the plan downloads or pays for it at its new place
        if there is not None or hashlib.sha256(data).hexdigest() != sha256:
            return "old"
        self._put(dst, data, sha256=sha256)
        self.remove_images([src])
        return "new"

    def move_meta(self, old_dir: str, new_dir: str, *, key: str, job: str) -> None:
        """``meta.json`` from one instance folder to another, naming the new key and job."""
        data = self._read(f"{old_dir}/meta.json")
        if data is None or self._read(f"{new_dir}/meta.json") is not None:
            return
        try:
            meta = json.loads(data)
        except ValueError:
            return
        if isinstance(meta, dict):
            meta.update(key=key, job=job)
            text = ",\n".join(f"  {json.dumps(k)}: {json.dumps(meta[k], ensure_ascii=False)}"
                              for k in sorted(meta))
            body = ("{\n" + text + "\n}\n").encode()
            self._put(f"{new_dir}/meta.json", body, sha256=hashlib.sha256(body).hexdigest())
            self.remove_images([f"{old_dir}/meta.json"])

    def read_bytes(self, stored: str) -> bytes | None:
        """The bytes of the object a stored path names; None if it is not there."""
        rel = self.absolute(stored)
        try:
            data: bytes = self._call(f"reading {rel}", lambda: self.fs.cat_file(self._path(rel)))
        except FileNotFoundError:
            return None
        return data

    def sign(self, stored: str, *, seconds: int = 7 * 24 * 3600) -> str | None:
        """A pre-signed URL of the object (None where the store cannot sign)."""
        rel = self.absolute(stored)
        try:
            return str(self._call(f"signing {rel}",
                                  lambda: self.fs.sign(self._path(rel), expiration=seconds)))
        except (NotImplementedError, StoreError):
            return None

    def verify(self, entries: Iterable[LockEntry]) -> list[VerifyProblem]:
        """Fetch and re-hash every recorded output of done entries; the missing and changed."""
        listing = self._objects()
        todo: list[tuple[str, Output]] = []
        problems: list[VerifyProblem] = []
        for entry in entries:
            if entry.status != "done":
                continue
            for output in entry.outputs:
                rel = self.absolute(output.path)
                if rel not in listing:
                    problems.append(VerifyProblem(entry.key, output.path, "missing"))
                elif listing[rel] != output.bytes:
                    problems.append(VerifyProblem(entry.key, output.path, "changed"))
                else:
                    todo.append((entry.key, output))
        for start in range(0, len(todo), _BATCH):
            batch = todo[start:start + _BATCH]
            paths = [self._path(self.absolute(o.path)) for _, o in batch]
            got: dict[str, Any] = self._call("reading objects", self._cat_many(paths))
            for (key, output), path in zip(batch, paths, strict=True):
                data = got.get(path, FileNotFoundError(path))
                if isinstance(data, FileNotFoundError):
                    problems.append(VerifyProblem(key, output.path, "missing"))
                elif isinstance(data, BaseException):
                    raise StoreError(f"{self.root}: reading {output.path} failed "
                                     f"({_describe(data)})") from data
                elif hashlib.sha256(data).hexdigest() != output.sha256:
                    problems.append(VerifyProblem(key, output.path, "changed"))
        return problems

    def _cat_many(self, paths: list[str]) -> Callable[[], dict[str, Any]]:
        """Fetch several objects at once: each path's bytes, or the exception it raised."""
        return lambda: dict(self.fs.cat(paths, on_error="return"))

    def check_index(self, entries: Mapping[str, LockEntry]) -> VerifyProblem | None:
        """Whether ``index.json`` is there and says what the lockfile says."""
        name = f"{self.root}/index.json"
        try:
            data = self._call("reading index.json",
                              lambda: self.fs.cat_file(self._path("index.json")))
            text: str | None = data.decode("utf-8")
        except FileNotFoundError:
            text = None
        except UnicodeDecodeError:
            return VerifyProblem("index.json", name, "changed")
        return index_problem(text, entries, self._index_images, name)

    def exists(self, stored: str) -> bool:
        """Whether the object a stored path names is listed."""
        rel = self.confined(stored)
        return rel is not None and rel in self._objects()

    def remove_files(self, stored: list[str]) -> None:
        """Delete objects, then the ``meta.json`` of each instance left without images."""
        self.remove_images(stored)
        listing = self._objects()
        folders = {posixpath.dirname(rel) for rel in
                   (self.confined(s) for s in stored) if rel is not None}
        for folder in sorted(folders):
            inside = [rel for rel in listing if rel.startswith(folder + "/")]
            if inside == [f"{folder}/meta.json"]:
                self.remove_images(inside)

    def local_file(self, stored: str) -> Path:
        """A local copy of the object a stored path names, fetched into the cache once
        (an image another job edits, sent when its result link has expired)."""
        rel = self.absolute(stored)
        target = self.cache / "objects" / rel
        if not target.is_file() or target.stat().st_size != self._objects().get(rel):
            self.fetch(stored, target)
        return target

    def fetch(self, stored: str, target: Path) -> bool:
        """Copy the object a stored path names to a local file (atomically); False if gone."""
        data = self.read_bytes(stored)
        if data is None:
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
        temp.write_bytes(data)
        temp.replace(target)
        return True


def _describe(exc: BaseException) -> str:
    """A foreign exception as a message may show it: its kind and text, secrets scrubbed."""
    text = str(exc) or type(exc).__name__
    for name in _SECRET_ENV:
        value = os.environ.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    text = _SIGNED.sub(lambda m: f"{m.group(1)}=***", text)
    if len(text) > 300:
        text = text[:300] + "…"
    return f"{type(exc).__name__}: {text}"
