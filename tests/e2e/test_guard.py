"""The run guard across real processes: refusal naming the holder, takeover after death."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.errors import RunGuardHeld
from pipeline.shell.store.guard import RunGuard, guard_path

REPO = Path(__file__).resolve().parents[2]

HOLDER_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    from pathlib import Path
    from pipeline.shell.store.guard import RunGuard

    with RunGuard(Path(sys.argv[2]), subject="shop.yaml"):
        print("held", flush=True)
        sys.stdin.read()  # hold until the test closes our stdin
""")


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """A subprocess holding the guard at tmp_path/shop.run.guard until its stdin closes."""
    path = tmp_path / "shop.run.guard"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER_SCRIPT, str(REPO), str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 20)
    assert ready, "the holder did not take the guard within 20 s"
    assert proc.stdout.readline() == "held\n"
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=20)


def record(path: Path) -> dict[str, object]:
    """The pid record in a guard file."""
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def test_guard_path_is_beside_the_lockfile() -> None:
    """shop.lock.json → shop.run.guard; the simulate lockfile gets its own guard."""
    assert guard_path(Path("/x/shop.lock.json")) == Path("/x/shop.run.guard")
    assert guard_path(Path("/x/shop.simulate.lock.json")) == Path("/x/shop.simulate.run.guard")


@pytest.mark.timeout(60)
def test_other_process_is_refused_with_holder_pid(
    tmp_path: Path, holder: subprocess.Popen[str],
) -> None:
    """A second run in another process is refused, naming the holder's pid, start and manifest."""
    path = tmp_path / "shop.run.guard"
    with pytest.raises(RunGuardHeld) as info, RunGuard(path, subject="shop.yaml"):
        pass
    message = str(info.value)
    assert f"another imgspec run (pid {holder.pid}, started 20" in message
    assert message.endswith("is working on shop.yaml; wait for it to finish or stop it")
    assert info.value.exit_code == 5
    # The refused attempt must not have clobbered the holder's record.
    assert record(path)["pid"] == holder.pid


@pytest.mark.timeout(60)
def test_guard_is_taken_over_after_holder_is_killed(
    tmp_path: Path, holder: subprocess.Popen[str],
) -> None:
    """Once the holder is SIGKILLed, the next run takes the guard over and records its own pid."""
    path = tmp_path / "shop.run.guard"
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=20)
    assert record(path)["pid"] == holder.pid  # the dead holder's record is still there
    with RunGuard(path) as guard:
        assert guard.held
        assert record(path)["pid"] == os.getpid()


@pytest.mark.timeout(60)
def test_guard_is_free_after_holder_exits_normally(
    tmp_path: Path, holder: subprocess.Popen[str],
) -> None:
    """A holder that finishes removes its record, and the guard is free again."""
    path = tmp_path / "shop.run.guard"
    holder.communicate("", timeout=20)
    assert holder.returncode == 0
    assert not path.exists()
    with RunGuard(path):
        pass


def test_second_acquisition_in_same_process_is_refused(tmp_path: Path) -> None:
    """flock belongs to the open file, so the same process cannot take the guard twice."""
    path = tmp_path / "shop.run.guard"
    with RunGuard(path):
        mine = path.read_bytes()
        with pytest.raises(RunGuardHeld, match=f"pid {os.getpid()},"), RunGuard(path):
            pass
        assert path.read_bytes() == mine


def test_same_guard_object_is_not_reentrant(tmp_path: Path) -> None:
    """Entering one RunGuard twice is a programming error, not a silent second hold."""
    guard = RunGuard(tmp_path / "shop.run.guard")
    with guard, pytest.raises(RuntimeError, match="not re-entrant"), guard:
        pass


def test_release_removes_the_record(tmp_path: Path) -> None:
    """Leaving the block removes the guard file; the guard can be taken again afterwards."""
    path = tmp_path / "shop.run.guard"
    guard = RunGuard(path)
    with guard:
        assert record(path)["pid"] == os.getpid()
    assert not path.exists()
    assert not guard.held
    with RunGuard(path):
        assert path.exists()


def test_release_on_exception_removes_the_record(tmp_path: Path) -> None:
    """An exception (e.g. Ctrl-C) leaving the block still releases the guard."""
    path = tmp_path / "shop.run.guard"
    with pytest.raises(KeyboardInterrupt), RunGuard(path):
        raise KeyboardInterrupt
    assert not path.exists()


@pytest.mark.timeout(60)
def test_stale_record_of_dead_pid_is_taken_over(tmp_path: Path) -> None:
    """A guard file naming a dead pid, with no lock held on it, is taken over silently."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True, timeout=20)
    dead_pid = int(dead.stdout)
    path = tmp_path / "shop.run.guard"
    path.write_text(json.dumps({"pid": dead_pid, "started": "2020-01-01T00:00:00Z",
                                "host": "elsewhere", "padding": "x" * 200}), encoding="utf-8")
    with RunGuard(path):
        assert record(path)["pid"] == os.getpid()  # fully rewritten, no leftover bytes


def test_unreadable_record_still_refuses(tmp_path: Path) -> None:
    """A held guard whose record cannot be parsed is still refused, saying the pid is unknown."""
    path = tmp_path / "shop.run.guard"
    with RunGuard(path):
        path.write_text("garbage", encoding="utf-8")
        with pytest.raises(RunGuardHeld, match=r"\(pid unknown\) is working on shop;"), \
                RunGuard(path):
            pass


CONTENDER_SCRIPT = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, sys.argv[1])
    from pathlib import Path
    from pipeline.errors import RunGuardHeld
    from pipeline.shell.store.guard import RunGuard

    path, marker, wins = Path(sys.argv[2]), Path(sys.argv[3]), 0
    while wins < int(sys.argv[4]):
        try:
            with RunGuard(path):
                # O_EXCL fails if another process believes it holds the guard right now.
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                os.unlink(marker)
                wins += 1
        except RunGuardHeld:
            pass
""")


@pytest.mark.timeout(120)
def test_contending_processes_never_hold_the_guard_together(tmp_path: Path) -> None:
    """Processes racing to take and release (and unlink) the guard never overlap."""
    path, marker = tmp_path / "shop.run.guard", tmp_path / "holder.marker"
    procs = [
        subprocess.Popen([sys.executable, "-c", CONTENDER_SCRIPT, str(REPO), str(path),
                          str(marker), "150"], stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=100)
        assert proc.returncode == 0, err
    assert not path.exists()


def test_held_guard_error_carries_its_facts(tmp_path: Path) -> None:
    """RunGuardHeld names the guard file and the holder's pid as attributes, not only words."""
    from pipeline.errors import RunGuardHeld

    path = tmp_path / "shop.run.guard"
    with RunGuard(path, subject="shop.yaml"), pytest.raises(RunGuardHeld) as caught, \
            RunGuard(path, subject="shop.yaml"):
        pass
    assert caught.value.guard == path
    assert caught.value.holder_pid == os.getpid()
