"""The reuse scan reads only its side's files: the suffixes the run's context names."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.core.lock.lockfile import Lockfile
from pipeline.operations.context import context
from pipeline.shell.store import reuse_scan
from pipeline.shell.store.reuse_scan import Where, project_results

LOCKFILES = ("shop.lock.json", "shop.simulate.lock.json", "old.lock.json",
             "old.simulate.lock.json", "notes.json")
OUTPUTS = ("shop", "shop.simulate", "old", "old.simulate")


def _scanned(root: Path, *, simulate: bool,
             monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[str]]:
    """(lockfiles read, output folders looked into) by a scan of ``root`` on one side."""
    for name in LOCKFILES:
        (root / "manifests" / name).write_text("{}")
    for name in OUTPUTS:
        (root / "outputs" / name).mkdir(parents=True, exist_ok=True)
    side = context(root / "manifests" / "shop.yaml", simulate=simulate)
    read: list[str] = []
    looked: list[str] = []

    def read_lock(path: Path) -> Lockfile:
        read.append(path.name)
        return Lockfile(manifest=path.name)

    def instance_folders(folder: str) -> Iterator[str]:
        looked.append(Path(folder).name)
        return iter(())

    monkeypatch.setattr(reuse_scan, "_instance_folders", instance_folders)
    outputs = root / "outputs" / f"shop{side.outputs_suffix}"
    where = Where(root, root / "manifests" / "shop.yaml", root / "manifests" / "x.lock.json",
                  outputs, lock_suffix=side.lock_suffix, outputs_suffix=side.outputs_suffix)
    assert project_results(where, Lockfile(manifest="shop.yaml"), read_lock=read_lock).empty()
    return sorted(read), sorted(looked)


def test_a_real_scan_never_reads_simulated_files(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A real plan reads the real lockfiles and output folders only."""
    (tmp_path / "manifests").mkdir()
    (tmp_path / ".git").mkdir()
    assert _scanned(tmp_path, simulate=False, monkeypatch=monkeypatch) == (
        ["old.lock.json", "shop.lock.json"], ["old", "shop"])


def test_a_simulated_scan_reads_only_simulated_files(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A --simulate plan reads the --simulate lockfiles and output folders only."""
    (tmp_path / "manifests").mkdir()
    (tmp_path / ".git").mkdir()
    assert _scanned(tmp_path, simulate=True, monkeypatch=monkeypatch) == (
        ["old.simulate.lock.json", "shop.simulate.lock.json"],
        ["old.simulate", "shop.simulate"])
