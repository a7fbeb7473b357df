"""Read access to the files a manifest may name, confined to the manifest's folder.

The pure core never opens files itself: it is handed a ``Workspace``. The real one
reads below a directory and refuses anything that escapes it (``..``, absolute
paths, symlinks pointing out); the in-memory one serves unit tests.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Protocol

from pipeline.errors import InputFileError

# Inputs are images of at most 20 MB and small text files; refuse to slurp anything bigger.
MAX_FILE_BYTES = 25 * 1024 * 1024


class Workspace(Protocol):
    """Where relative paths in a manifest are read from."""

    def read_bytes(self, relpath: str) -> bytes:
        """The file's bytes; ``InputFileError`` if missing, too large or outside the folder."""
        ...


def read_text(workspace: Workspace, relpath: str) -> str:
    """A workspace file decoded as UTF-8 (``InputFileError`` if it is not)."""
    try:
        return workspace.read_bytes(relpath).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputFileError(f"{relpath}: not UTF-8 text ({exc.reason})") from exc


def normalise_relpath(relpath: str) -> str:
    """A POSIX relative path without ``.`` parts; ``InputFileError`` if it could escape."""
    if not relpath or "\x00" in relpath:
        raise InputFileError(f"{relpath!r}: not a usable file path")
    pure = PurePosixPath(relpath.replace("\\", "/"))
    if pure.is_absolute() or (pure.parts and pure.parts[0].endswith(":")):
        raise InputFileError(f"{relpath}: absolute paths are not allowed; "
                             "use a path relative to the manifest's folder")
    if ".." in pure.parts:
        raise InputFileError(f"{relpath}: '..' is not allowed; "
                             "keep files inside the manifest's folder")
    return str(pure)


class DirectoryWorkspace:
    """Files below ``root`` only; symlinks are followed but must stay inside."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def resolve(self, relpath: str) -> Path:
        """The absolute path of ``relpath``, guaranteed to lie inside the root."""
        target = (self.root / normalise_relpath(relpath)).resolve()
        if target != self.root and self.root not in target.parents:
            raise InputFileError(f"{relpath}: points outside the manifest's folder")
        return target

    def read_bytes(self, relpath: str) -> bytes:
        """Read a file, bounded in size."""
        path = self.resolve(relpath)
        try:
            size = path.stat().st_size
            if size > MAX_FILE_BYTES:
                raise InputFileError(f"{relpath}: {size:,} bytes is larger than the "
                                     f"{MAX_FILE_BYTES:,} bytes an input may have")
            with path.open("rb") as handle:
                return handle.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError as exc:
            raise InputFileError(f"{relpath}: no such file (looked in {self.root})") from exc
        except IsADirectoryError as exc:
            raise InputFileError(f"{relpath}: is a directory, not a file") from exc
        except OSError as exc:
            raise InputFileError(f"{relpath}: cannot be read ({os.strerror(exc.errno or 0)})"
                                 ) from exc


class MemoryWorkspace:
    """An in-memory folder for tests: ``{"assets/a.png": b"..."}``."""

    def __init__(self, files: Mapping[str, bytes | str] | None = None) -> None:
        self.files = {
            normalise_relpath(k): v.encode() if isinstance(v, str) else v
            for k, v in (files or {}).items()
        }

    def read_bytes(self, relpath: str) -> bytes:
        """Serve a stored file."""
        try:
            return self.files[normalise_relpath(relpath)]
        except KeyError:
            raise InputFileError(f"{relpath}: no such file") from None
