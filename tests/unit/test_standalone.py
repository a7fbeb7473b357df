"""The repository stands alone: no file names a path outside it."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Built from pieces so that this file does not name them itself.
OUTSIDE = ("shared" + "/api", "shared" + "/design", "../" + "shared", "DESIGN" + ".md")


def test_no_tracked_file_names_a_path_outside_the_repository() -> None:
    """No tracked file cites the design notes or API copies that live outside the repo."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                             check=True).stdout.decode().split("\0")
    found = []
    for name in filter(None, tracked):
        path = ROOT / name
        if not path.is_file():
            continue
        text = path.read_bytes().decode("utf-8", errors="replace")
        found += [f"{name}: {needle}" for needle in OUTSIDE if needle in text]
    assert found == []
