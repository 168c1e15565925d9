"""LlamaIndex's Anthropic LLM through the sidecar, with the case study's message pattern.

LlamaIndex runs in its own environment (``.venv-llamaindex``, made by
``make venv-llamaindex``: its Anthropic package needs an older anthropic SDK), so the
calls are a script (``llamaindex_calls.py``) run as a subprocess against the sidecar in
this test's event loop. LlamaIndex joins the two system messages into one system string;
the sidecar's policy moves the time out of it. Checked: every answer arrives, the usage
LlamaIndex reports adds up to what the provider counted, and calls after the first read
the static prompt from cache, whole, streamed and in a tool loop.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tests.clients.conftest import ANTHROPIC_MODEL, KEY, STATIC_SYSTEM, Stack

ROOT = Path(__file__).resolve().parents[2]
PYTHON = ROOT / ".venv-llamaindex" / "bin" / "python"
SCRIPT = Path(__file__).with_name("llamaindex_calls.py")


async def run_calls(stack: Stack, tmp_path: Path) -> list[dict[str, Any]]:
    static = tmp_path / "static.txt"
    static.write_text(STATIC_SYSTEM, encoding="utf-8")
    process = await asyncio.create_subprocess_exec(
        str(PYTHON), str(SCRIPT), stack.sidecar_url, KEY, ANTHROPIC_MODEL, str(static),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, err.decode()[-2000:]
    return [json.loads(line) for line in out.decode().splitlines() if line.strip()]


@pytest.mark.skipif(
    not PYTHON.exists(),
    reason="needs .venv-llamaindex: run `make venv-llamaindex` (make test does)",
)
async def test_case_study_pattern_whole_streamed_and_tools(stack: Stack, tmp_path: Path) -> None:
    calls = await run_calls(stack, tmp_path)
    assert [c["kind"] for c in calls] == ["whole"] * 3 + ["streamed"] * 3 + [
        "tool_call",
        "tool_result",
    ]
    assert all(c["text"] for c in calls)
    seen = stack.delta()
    reported = {
        "uncached": sum(c["usage"].get("input_tokens", 0) for c in calls),
        "cache_read": sum(c["usage"].get("cache_read_input_tokens", 0) for c in calls),
        "cache_write": sum(c["usage"].get("cache_creation_input_tokens", 0) for c in calls),
        "output": sum(c["usage"].get("output_tokens", 0) for c in calls),
    }
    assert reported == {k: seen[k] for k in reported}
    reads = [c["usage"].get("cache_read_input_tokens", 0) for c in calls]
    static = len(STATIC_SYSTEM) // 4 * 0.9
    assert reads[0] == 0
    assert all(r >= static for r in reads[1:6]), reads
    # Adding tools changes the cached prefix (tools come first): the tool loop's first call
    # writes it, the call with the tool's result reads it.
    assert reads[7] >= static, reads
