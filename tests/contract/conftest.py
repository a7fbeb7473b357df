"""The contract tests use the end-to-end fixtures (project, simulators, imgspec)."""

from tests.e2e.conftest import imgspec, project, sim, start_sim

__all__ = ["imgspec", "project", "sim", "start_sim"]
