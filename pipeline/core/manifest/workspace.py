"""The port through which the core reads the files a manifest names: a ``Workspace``.

The core never opens files itself: the shell hands it a ``Workspace``
(``pipeline.shell.store.workspace.DirectoryWorkspace`` reads below the manifest's
folder); ``MemoryWorkspace`` serves a folder held in memory, as unit tests and
manifests built in code use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Protocol

from pipeline.errors import InputFileError


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
