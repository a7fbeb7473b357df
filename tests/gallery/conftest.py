"""Gallery and review tests: the pure-core helpers of tests/unit, shared here."""

from __future__ import annotations

from tests.unit.conftest import build

__all__ = ["build"]
