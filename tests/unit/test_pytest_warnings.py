"""The test configuration itself: a leaked aiohttp session fails the test that leaked it.

``filterwarnings`` once ignored ``ResourceWarning``, so a proxy that forgot to close a
session passed. This runs a tiny test that leaks one under the project's own
``filterwarnings`` and checks that it fails.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]


def _project_options() -> dict[str, object]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    options: dict[str, object] = config["tool"]["pytest"]["ini_options"]
    return options


def _project_filterwarnings() -> list[str]:
    values = _project_options()["filterwarnings"]
    assert isinstance(values, list)
    return [str(v) for v in values]


def test_resource_warnings_are_not_ignored() -> None:
    assert not any(
        "ResourceWarning" in f and f.startswith("ignore") for f in _project_filterwarnings()
    )


def test_a_leaked_client_session_fails_the_test(pytester: pytest.Pytester) -> None:
    options = _project_options()
    lines = "\n".join(f"    {value}" for value in _project_filterwarnings())
    pytester.makeini(
        "[pytest]\n"
        f"asyncio_mode = {options['asyncio_mode']}\n"
        f"asyncio_default_fixture_loop_scope = {options['asyncio_default_fixture_loop_scope']}\n"
        f"filterwarnings =\n{lines}\n"
    )
    pytester.makepyfile(
        """
        import asyncio
        import gc

        import aiohttp


        def test_leaks() -> None:
            async def leak() -> None:
                aiohttp.ClientSession()  # never closed

            asyncio.run(leak())
            gc.collect()
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*Unclosed client session*"])
