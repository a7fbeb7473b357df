"""Read access to a manifest and the files it may name, confined to the manifest's folder.

``DirectoryWorkspace`` is the ``Workspace`` (the core's port,
``pipeline.core.manifest.workspace``) that reads below a directory and refuses
anything that escapes it (``..``, absolute paths, symlinks pointing out).
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.core.manifest.workspace import normalise_relpath
from pipeline.errors import InputFileError
from pipeline.shell.store.files import NotARegularFile, read_regular

MAX_MANIFEST_BYTES = 10 * 1024 * 1024
# Inputs are images of at most 20 MB and small text files; refuse to slurp anything bigger.
MAX_FILE_BYTES = 25 * 1024 * 1024


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
            data = read_regular(path, limit=MAX_FILE_BYTES)
        except FileNotFoundError as exc:
            raise InputFileError(f"{relpath}: no such file (looked in {self.root})") from exc
        except NotARegularFile as exc:
            # A FIFO would block validate and plan for ever; a device could be endless.
            raise InputFileError(f"{relpath}: {exc.strerror}; inputs must be regular files "
                                 f"({path})") from exc
        except OSError as exc:
            raise InputFileError(f"{relpath}: cannot be read ({os.strerror(exc.errno or 0)})"
                                 ) from exc
        if len(data) > MAX_FILE_BYTES:
            raise InputFileError(f"{relpath}: more than the {MAX_FILE_BYTES:,} bytes an input "
                                 "may have")
        return data


def read_manifest_text(path: Path) -> str:
    """The manifest's text; ``InputFileError`` if it is missing, too large or not UTF-8."""
    try:
        data = read_regular(path, limit=MAX_MANIFEST_BYTES)
        if len(data) > MAX_MANIFEST_BYTES:
            raise InputFileError(f"{path}: more than {MAX_MANIFEST_BYTES:,} bytes is too large "
                                 "for a manifest")
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputFileError(f"{path}: not UTF-8 text; save the manifest as UTF-8") from exc
    except FileNotFoundError as exc:
        raise InputFileError(f"{path}: no such manifest") from exc
    except NotARegularFile as exc:
        raise InputFileError(f"{path}: {exc.strerror}; a manifest must be a regular file"
                             ) from exc
    except OSError as exc:
        raise InputFileError(f"{path}: cannot be read ({exc.strerror})") from exc
