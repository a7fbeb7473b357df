"""Where a manifest's outputs go: a local folder, or a prefix in an object store.

``output_dir:`` (and ``--output-dir``) is either a folder, relative to the manifest,
or a URL: ``s3://bucket/prefix``, ``gs://…``, ``az://…``, ``file:///abs/path``. This
module parses that value (one function, ``parse_output_dir``, for every caller),
checks the manifest's ``storage_options:`` hold nothing secret, and names the
interface both kinds of output root offer the run, ``verify``, ``prune`` and the
gallery: ``OutputStore``. The local folder is ``pipeline.shell.store.outputs``, the
object store ``pipeline.shell.store.objectstore``.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, Protocol

from pipeline.errors import UsageError

if TYPE_CHECKING:
    from pipeline.core.expansion.instances import Expansion, Instance
    from pipeline.core.lock.lockfile import LockEntry, Output
    from pipeline.shell.store.layout import VerifyProblem

# The URL schemes fsspec is asked for, by the name a user writes.
SCHEMES = {"s3": "s3", "s3a": "s3", "gs": "gs", "gcs": "gs", "az": "az", "abfs": "az",
           "file": "file"}
# The extra that installs each scheme's filesystem.
EXTRAS = {"s3": "s3", "gs": "gcs", "az": "azure", "file": "s3"}
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$")
_PART = re.compile(r"^[A-Za-z0-9._=,+@-]{1,255}$")
# Option names that carry a credential: never accepted from a manifest (a file people
# commit and share); credentials come from the environment, a profile or a role.
_SECRET = re.compile(r"key|secret|token|password|passwd|credential|sas|signature|"
                     r"connection_string|session", re.IGNORECASE)
# Option values, too, are written nowhere else, but a manifest may carry only plain ones.
OptionValue = str | int | float | bool


@dataclass(frozen=True, slots=True)
class StoreURL:
    """An object-store output root: ``protocol`` (fsspec's) and ``path`` (``bucket/prefix``)."""

    protocol: str
    path: str  # no scheme, no trailing slash; the bucket (or container) first

    @property
    def text(self) -> str:
        """The URL as users write it (``s3://bucket/prefix``)."""
        lead = "/" if self.protocol == "file" else ""
        return f"{self.protocol}://{lead}{self.path}"

    def suffixed(self, suffix: str) -> StoreURL:
        """The same root with ``suffix`` added to its last segment (``--simulate``'s)."""
        return StoreURL(self.protocol, self.path + suffix)

    def __str__(self) -> str:
        return self.text


def parse_output_dir(value: str) -> StoreURL | None:
    """``None`` for a folder (the default kind); a ``StoreURL`` for an object-store URL.

    ``UsageError`` for a URL imgspec cannot use: an unknown scheme, no bucket, a
    ``..`` or empty segment, a query string, or credentials in the URL (they would be
    printed, and written to lockfiles' neighbours; the environment holds them).
    """
    found = _URL.match(value.strip())
    if found is None:
        return None
    scheme, rest = found.group(1).lower(), found.group(2)
    protocol = SCHEMES.get(scheme)
    if protocol is None:
        raise UsageError(f"output_dir {_shown(value)}: imgspec writes to a folder or to "
                         f"{', '.join(sorted(f'{s}://' for s in SCHEMES))}, not {scheme}://")
    if "?" in rest or "#" in rest:
        raise UsageError(f"output_dir {_shown(value)}: a storage URL takes no query or "
                         "fragment; give options as storage_options: in the manifest")
    if protocol == "file":
        if not rest.startswith("/"):
            raise UsageError(f"output_dir {_shown(value)}: a file:// URL names an absolute "
                             "folder (file:///srv/images)")
        rest = rest.lstrip("/")
    elif "@" in rest.split("/", 1)[0] or ":" in rest.split("/", 1)[0]:
        raise UsageError(f"output_dir {_shown(value)}: no credentials or ports in the URL; "
                         "the standard chain (environment, profile, role) and "
                         "AWS_ENDPOINT_URL provide them")
    parts = rest.rstrip("/").split("/")
    if not parts or parts == [""] or any(not _PART.match(p) or p in (".", "..")
                                         for p in parts):
        raise UsageError(f"output_dir {_shown(value)}: give a bucket and an optional prefix "
                         f"of plain segments, e.g. {scheme}://my-bucket/imgspec/shop")
    return StoreURL(protocol, "/".join(parts))


def _shown(value: str) -> str:
    """A URL as an error message may show it: anything before an ``@`` is hidden."""
    found = _URL.match(value.strip())
    if found is None or "@" not in found.group(2):
        return repr(value)
    return repr(f"{found.group(1)}://…@{found.group(2).split('@', 1)[1]}")


def check_storage_options(options: object) -> dict[str, OptionValue]:
    """The manifest's ``storage_options:`` as fsspec takes them; ``UsageError`` if any
    names a credential or is not a plain value.

    Only non-secret settings belong in a manifest (region, endpoint, addressing
    style); a key, secret or token there would be committed and shared.
    """
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise UsageError("storage_options: must be a mapping of option names to values")
    checked: dict[str, OptionValue] = {}
    for name, value in options.items():
        if not isinstance(name, str) or _SECRET.search(name):
            raise UsageError(f"storage_options: {name!r} looks like a credential; a manifest "
                             "holds none: use the environment (AWS_ACCESS_KEY_ID, "
                             "AWS_SECRET_ACCESS_KEY, AWS_PROFILE) or the machine's role")
        if isinstance(value, Mapping):
            # s3fs's client_kwargs / config_kwargs: one level, checked the same way.
            checked[name] = check_storage_options(value)  # type: ignore[assignment]
            continue
        if not isinstance(value, str | int | float | bool):
            raise UsageError(f"storage_options: {name!r} must be a string, number or "
                             "true/false")
        checked[name] = value
    return checked


def cache_folder(url: StoreURL) -> Path:
    """This machine's folder for one store: downloads before upload, thumbnails, copies.

    ``IMGSPEC_CACHE_DIR``, else ``$XDG_CACHE_HOME/imgspec``, else ``~/.cache/imgspec``;
    one sub-folder per store URL.
    """
    base = os.environ.get("IMGSPEC_CACHE_DIR")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        base = str(Path(xdg) / "imgspec")
    digest = hashlib.sha256(url.text.encode()).hexdigest()[:16]
    return Path(base) / "stores" / digest


class OutputStore(Protocol):
    """What a run, ``verify``, ``prune`` and the gallery need of an output root.

    Paths in a lockfile are "stored" paths: for a folder relative to the lockfile's
    folder, for a store relative to its prefix. Every method that takes one confines
    it to the root first.
    """

    @property
    def shown(self) -> str:
        """The root as messages name it."""

    def check_folders(self, instances: Iterable[tuple[str, str]]) -> None:
        """Refuse, before a run spends anything, instance folders it must not write."""

    def clean_temp_files(self, instances: Iterable[tuple[str, str]]) -> None:
        """Remove what interrupted downloads of these (job, key) instances left."""

    def temp_path(self, job: str, key: str, index: int) -> Path:
        """A fresh local file for a download of image ``index`` of an instance."""

    def install(self, temp: Path, job: str, key: str, index: int, fmt: str, *,
                sha256: str, previous: str | None = None) -> PurePath:
        """Put a verified download (of this ``sha256``) in its place, confirmed there;
        its final path."""

    def relative(self, path: PurePath) -> str:
        """A final path as the lockfile stores it."""

    def confined(self, stored: str) -> str | None:
        """The location a stored path names, or None when it is outside the root."""

    def check_entries(self, entries: Iterable[LockEntry]) -> None:
        """Refuse a lockfile any of whose output paths lies outside the root."""

    def remove_images(self, stored: Iterable[str]) -> None:
        """Delete images the lockfile no longer lists."""

    def write_meta(self, inst: Instance, entry: LockEntry, manifest: str) -> None:
        """``meta.json`` beside an instance's images."""

    def write_index(self, expansion: Expansion, entries: Mapping[str, LockEntry],
                    manifest: str) -> Path | str:
        """``index.json`` of every instance; where it was written."""

    def check_index(self, entries: Mapping[str, LockEntry]) -> VerifyProblem | None:
        """Whether ``index.json`` says what the lockfile says."""

    def present(self, *, rehash: bool = False) -> Callable[[Output], bool]:
        """The plan's predicate: a recorded output is there, of its size (and hash)."""

    def verify(self, entries: Iterable[LockEntry]) -> list[VerifyProblem]:
        """Re-hash every recorded output of done entries; the missing and the changed."""

    def local_file(self, stored: str) -> Path:
        """A local file holding the image a stored path names (to send it as an input)."""

    def exists(self, stored: str) -> bool:
        """Whether the image a stored path names is there."""

    def remove_files(self, stored: list[str]) -> None:
        """Delete images (``prune --outputs``), and the meta.json of instances left empty."""


def storage_kwargs(options: Mapping[str, Any]) -> dict[str, Any]:
    """``storage_options`` as keyword arguments (a copy: fsspec may keep the dict)."""
    return {name: (dict(value) if isinstance(value, Mapping) else value)
            for name, value in options.items()}
