"""Folders whose contents are read and written only where their real path stays inside them.

Git commits symbolic links, so a project someone else wrote may hold
``outputs -> /tmp/x``, a linked job folder, a linked ``_thumbs`` or an image that
links to a secret file. A ``Confined`` folder checks every path below it by real
path before anything is read or written there: a link that stays inside is
followed, a link that leads out is refused (``LinkLeadsOutside``) with its path.

Cheap enough for the download path: the folder's own real path is resolved once,
each folder below it is checked the first time it is used (one ``lstat``; only a
link costs a ``realpath``) and remembered, and a file costs the ``lstat`` that
replaces the ``stat`` its reader needed anyway. Folders are created one level at a
time with ``mkdir``, which never follows a link at the name it creates.

What this does not guard against is someone swapping a folder for a link while
a command runs: the threat is links that arrive with a checkout, not a local
attacker racing the process.
"""

from __future__ import annotations

import errno
import os
import shlex
import shutil
import stat
from pathlib import Path

from pipeline.errors import ImgspecError, LinkLeadsOutside, UsageError


def inside(real: str, folder: str) -> bool:
    """Whether the real path ``real`` is ``folder`` (a real path) or lies below it."""
    return real == folder or real.startswith(os.path.join(folder, ""))  # noqa: PTH118


def check_root(folder: Path, project: Path, *, advice: str) -> None:
    """Refuse ``folder`` when its real path lies outside ``project``.

    ``folder`` need not exist yet: the part that exists is resolved. The refusal
    names the first link on the way that leads out; ``advice`` follows "Remove the
    link (rm PATH)" in it.
    """
    real = os.path.realpath(folder)
    project_real = os.path.realpath(project)
    if inside(real, project_real):
        return
    link, target = _first_link_out(folder, project_real)
    raise LinkLeadsOutside(link, target, Path(project_real),
                           f"Remove the link (rm {shlex.quote(str(link))}){advice}")


def _first_link_out(path: Path, folder: str) -> tuple[Path, str]:
    """The first link on ``path`` below ``folder`` whose real path is outside ``folder``,
    with where it leads; ``path`` itself when no single link can be named."""
    probe = Path(os.path.abspath(path))  # noqa: PTH100
    for candidate in (*reversed(probe.parents), probe):
        if inside(str(candidate), folder) and candidate.is_symlink():
            real = os.path.realpath(candidate)
            if not inside(real, folder):
                return candidate, real
    return probe, os.path.realpath(probe)


class Confined:
    """A folder (``root``) whose every read and write below it is checked by real path.

    ``label`` names the folder in refusals ("the output folder"); ``advice`` follows
    "Remove the link (rm PATH)" in a refusal, e.g. what the next run does about it.
    """

    def __init__(self, root: Path, *, label: str, advice: str) -> None:
        self.root = Path(os.path.abspath(root))  # noqa: PTH100
        self.label = label
        self.advice = advice
        self._root = str(self.root)
        self._real = os.path.realpath(self.root)
        # Folders below the root already found to be folders inside it (lexical paths).
        self._checked: set[str] = set()

    @property
    def real(self) -> str:
        """The root's real path (resolved once, when this was made)."""
        return self._real

    def check_folder(self, folder: str) -> None:
        """Check the existing part of the folders from the root down to ``folder``.

        A missing folder ends the check (nothing can be read from it; ``make_folder``
        creates it). Every folder found good is remembered.
        """
        if folder in self._checked:
            return
        for path in self._below_root(folder):
            if path in self._checked:
                continue
            try:
                info = os.lstat(path)
            except FileNotFoundError:
                return
            self._accept(path, info)

    def make_folder(self, folder: str) -> None:
        """Create the folders from the root down to ``folder`` that are missing, and check
        the ones that exist: none of them can be a link leading out of the root."""
        if folder in self._checked:
            return
        if self._root not in self._checked:
            # The root's own components were checked when the root was chosen
            # (``check_root``); create what is missing of it.
            self.root.mkdir(parents=True, exist_ok=True)
            self._real = os.path.realpath(self._root)
            self._checked.add(self._root)
        for path in self._below_root(folder):
            if path in self._checked:
                continue
            try:
                os.mkdir(path)  # noqa: PTH102 (never follows a link at ``path``)
            except FileExistsError:
                mode = os.lstat(path).st_mode
                if stat.S_ISLNK(mode):
                    self._refuse_outside(path)
                    try:
                        mode = os.stat(path).st_mode  # noqa: PTH116
                    except OSError:
                        mode = 0  # a link to nothing
                if not stat.S_ISDIR(mode):
                    raise ImgspecError(f"{path} is not a folder; move it away so imgspec "
                                       "can make the folder there") from None
            self._checked.add(path)

    def stat(self, path: str) -> os.stat_result | None:
        """The file at ``path`` (below the root) as it would be read; None if it is missing.

        Its folders are checked (``check_folder``); a link is followed only when its
        real path stays inside the root.
        """
        self.check_folder(os.path.dirname(path))  # noqa: PTH120
        try:
            info = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat.S_ISLNK(info.st_mode):
            return info
        self._refuse_outside(path)
        try:
            return os.stat(path)  # noqa: PTH116 (a str path: no Path built per file)
        except OSError:
            return None  # a link to nothing: as good as missing

    def create(self, path: str) -> int:
        """A descriptor of ``path`` (below the root), created or truncated for writing.

        Its folder must have been made (``make_folder``). Nothing is written through a
        link: one that leads out is refused, one that stays inside is replaced by the
        new file.
        """
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            return os.open(path, flags, 0o666)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
        self._refuse_outside(path)
        Path(path).unlink()
        return os.open(path, flags | os.O_EXCL, 0o666)

    def _below_root(self, folder: str) -> list[str]:
        """The folders from just below the root down to ``folder``, top first."""
        if folder == self._root:
            return [self._root]
        if not folder.startswith(self._root + os.sep):
            raise ImgspecError(f"{folder} is not inside {self.label} {self.root}; "
                               "nothing there is read or written")
        parts = folder[len(self._root) + 1:].split(os.sep)  # noqa: PTH206
        return [os.path.join(self._root, *parts[:i + 1]) for i in range(len(parts))]  # noqa: PTH118

    def _accept(self, path: str, info: os.stat_result) -> None:
        """Remember ``path`` as good once it is a folder, or a link that stays inside."""
        if stat.S_ISLNK(info.st_mode):
            self._refuse_outside(path)
        elif not stat.S_ISDIR(info.st_mode):
            return  # a file where a folder should be: reading below it fails as missing
        self._checked.add(path)

    def _refuse_outside(self, path: str) -> None:
        real = os.path.realpath(path)
        if not inside(real, self._real):
            raise LinkLeadsOutside(Path(path), real, Path(self._real),
                                   f"Remove the link (rm {shlex.quote(path)}){self.advice}")


def export_folder(dest: Path, *, outputs: Confined, project: Path) -> Confined:
    """Where ``export`` may write: ``dest`` by real path, refused when it is in the outputs.

    Compared by real path, so ``outputs/x/../name`` or a link into the output folder
    is seen for what it is. A destination named inside the project must also stay
    inside it: a link there (committed to git, say) does not carry the copies out;
    a folder named outside the project is the user's own choice.
    """
    named = os.path.abspath(dest)  # noqa: PTH100 (normalises ``..`` as the user wrote it)
    real = os.path.realpath(dest)
    for candidate in (named, real):
        if inside(candidate, str(outputs.root)) or inside(candidate, outputs.real):
            raise UsageError(f"--picked {dest} is inside the output folder {outputs.root} "
                             f"(it is {real}); choose a folder outside it")
    project_real = os.path.realpath(project)
    if inside(named, project_real) and not inside(real, project_real):
        link, target = _first_link_out(Path(named), project_real)
        raise LinkLeadsOutside(
            link, target, Path(project_real),
            f"Remove the link (rm {shlex.quote(str(link))}), or, to export there, name "
            f"that folder itself: --picked {shlex.quote(real)}")
    return Confined(Path(real), label="the export folder", advice="")


def copy_into(folder: Confined, source: str, target: str) -> None:
    """Copy the file ``source`` (already checked by its own folder) to ``target`` below
    ``folder``, with its times and mode, never writing through a link."""
    with open(source, "rb") as src:  # noqa: PTH123
        folder.make_folder(os.path.dirname(target))  # noqa: PTH120
        with os.fdopen(folder.create(target), "wb") as out:
            shutil.copyfileobj(src, out)
    shutil.copystat(source, target)
