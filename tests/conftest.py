"""The ``--kind`` option: ``make e2e-kind`` runs ``pytest tests/cluster --kind``.

kind runs Kubernetes nodes as Docker containers, so ``--kind`` needs a Docker *engine*,
not just the ``docker`` CLI: ``docker info`` must succeed. Where it does not, every
selected test is skipped with that reason instead of failing. Without ``--kind``, tests
marked ``e2e_kind`` are skipped (they need a kind cluster).
"""

from __future__ import annotations

import shutil
import subprocess

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--kind",
        action="store_true",
        default=False,
        help="also run the e2e tests on a kind cluster (needs a Docker engine; make e2e-kind)",
    )


def docker_engine_problem() -> str | None:
    """Why no Docker engine is usable, or ``None`` when ``docker info`` answers."""
    if shutil.which("docker") is None:
        return "the docker CLI is not installed"
    try:
        proc = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`docker info` failed: {exc}"
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        return f"`docker info` cannot reach an engine: {lines[-1] if lines else proc.returncode}"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("kind"):
        skip = pytest.mark.skip(reason="needs a kind cluster: run `make e2e-kind` (pytest --kind)")
        for item in items:
            if item.get_closest_marker("e2e_kind"):
                item.add_marker(skip)
        return
    problem = docker_engine_problem()
    if problem is not None:
        skip = pytest.mark.skip(reason=f"--kind needs a Docker engine: {problem}")
        for item in items:
            item.add_marker(skip)
