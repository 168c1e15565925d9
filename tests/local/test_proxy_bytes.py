"""What the app reads through the sidecar is what it would read without it, and counted.

* When the sidecar adds ``stream_options.include_usage`` to measure a streamed chat
  call, the provider also puts ``"usage":null`` into every chunk; the relay takes out
  exactly what the addition caused, so the app's bytes equal a direct call's.
* A client that accepts ``zstd`` (httpx with zstandard installed, for one) must not get
  answers the sidecar cannot read: the sidecar offers upstream only codings it decodes,
  so the tokens are counted.
"""

from __future__ import annotations

import gzip
import json
import struct

import aiohttp
from aiohttp import web

from tests.local.conftest import CacheUsage, FakeUpstream, StartSidecar

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "stream": True}


async def _raw(url: str, body: dict[str, object], headers: dict[str, str]) -> bytes:
    async with (
        aiohttp.ClientSession(auto_decompress=False) as http,
        http.post(url, json=body, headers=headers) as resp,
    ):
        assert resp.status == 200
        return await resp.read()


async def test_streamed_chunks_are_byte_identical_to_a_direct_call(
    start_sidecar: StartSidecar, fake_upstream: FakeUpstream
) -> None:
    sc = await start_sidecar()
    headers = {"Authorization": "Bearer k"}
    direct = await _raw(fake_upstream.url + "/v1/chat/completions", CHAT, headers)
    relayed = await _raw(sc.openai_url + "/chat/completions", CHAT, headers)
    sent = json.loads(fake_upstream.requests[-1].body)
    assert sent["stream_options"] == {"include_usage": True}  # the sidecar measured it
    assert b'"usage"' not in direct
    assert relayed == direct
    tokens = sc.metric(
        "promptcache_input_tokens_total",
        kind="cache_read",
        provider="openai",
        model="gpt-4o",
        policy="none",
    )
    assert tokens == CacheUsage().cache_read


def zstd_frame(data: bytes) -> bytes:
    """A valid zstd frame (RFC 8878) holding ``data`` in raw blocks, no compression."""
    out = struct.pack("<IB", 0xFD2FB528, 0xE0) + struct.pack("<Q", len(data))
    blocks = [data[i : i + 65536] for i in range(0, len(data), 65536)] or [b""]
    for n, block in enumerate(blocks):
        last = int(n == len(blocks) - 1)
        out += (len(block) << 3 | last).to_bytes(3, "little") + block
    return out


async def test_a_zstd_accepting_client_still_gets_its_tokens_counted(
    start_sidecar: StartSidecar, fake_upstream: FakeUpstream
) -> None:
    async def compressing(request: web.Request) -> web.StreamResponse:
        """Compresses as the client allows, preferring zstd (as providers may)."""
        answer = await fake_upstream.answer(request, await request.read())
        assert isinstance(answer, web.Response)
        assert isinstance(answer.body, bytes)
        accepted = request.headers.get("accept-encoding", "")
        headers = {"Content-Type": "application/json"}
        body = answer.body
        if "zstd" in accepted:
            body, headers["Content-Encoding"] = zstd_frame(body), "zstd"
        elif "gzip" in accepted:
            body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
        return web.Response(body=body, headers=headers)

    sc = await start_sidecar()
    fake_upstream.then(compressing)
    whole = {k: v for k, v in CHAT.items() if k != "stream"}
    raw = await _raw(
        sc.openai_url + "/chat/completions",
        whole,
        {"Authorization": "Bearer k", "Accept-Encoding": "zstd, gzip, deflate"},
    )
    offered = fake_upstream.requests[0].headers["accept-encoding"]
    assert "zstd" not in offered
    assert json.loads(gzip.decompress(raw))["usage"]["prompt_tokens_details"]["cached_tokens"]
    tokens = sc.metric(
        "promptcache_input_tokens_total",
        kind="cache_read",
        provider="openai",
        model="gpt-4o",
        policy="none",
    )
    assert tokens == CacheUsage().cache_read
