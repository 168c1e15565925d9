"""``promptcache sidecar`` as a real process: flags over environment, SDKs through it, SIGTERM."""

from __future__ import annotations

import asyncio
import sys

import aiohttp
import anthropic
import openai

from tests.local.conftest import FakeUpstream, RunSidecar, free_port


def _sync_call(url: str) -> str:
    client = anthropic.Anthropic(api_key="k", base_url=url, max_retries=0)
    message = client.messages.create(
        model="claude-sonnet-4-6", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
    )
    return message.content[0].type


async def test_process_serves_sdks_and_stops_on_sigterm(
    fake_upstream: FakeUpstream, sidecar_process: RunSidecar
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    env = {
        # The flag must win over the environment for the Anthropic upstream ...
        "PROMPTCACHE_ANTHROPIC_UPSTREAM": dead,
        # ... and the environment must be used where no flag is given.
        "PROMPTCACHE_OPENAI_UPSTREAM": fake_upstream.url,
    }
    async with sidecar_process(["--anthropic-upstream", fake_upstream.url], env) as proc:
        assert await asyncio.to_thread(_sync_call, proc.url) == "text"
        async with openai.AsyncOpenAI(
            api_key="k", base_url=proc.url + "/v1", max_retries=0
        ) as client:
            stream = await client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            chunks = [chunk async for chunk in stream]
        assert chunks
        assert all(chunk.choices for chunk in chunks)  # the injected usage chunk is gone
        async with aiohttp.ClientSession() as http:
            async with http.get(proc.admin_url + "/metrics") as r:
                text = await r.text()
            async with http.get(proc.admin_url + "/healthz") as r:
                assert r.status == 200
        assert 'promptcache_input_tokens_total{kind="cache_read",model="gpt-4o"' in text
        assert "process_resident_memory_bytes" in text
        assert await proc.stop() == 0


async def test_bad_flag_value_exits_with_a_one_line_reason() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "promptcache", "sidecar", "--anthropic-upstream", "ftp://nope",
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await process.communicate()
    assert process.returncode == 2
    assert b"anthropic_upstream" in err
    assert b"Traceback" not in err
