"""Bad input from the app: forwarded as sent, or refused in the provider's shape; never a 5xx.

Whatever the sidecar cannot parse it forwards byte for byte (the upstream decides, as it
would without the sidecar) and counts in ``promptcache_transform_errors_total``. Its own
limits answer 413 (body too large) and 408 (body too slow). The process stays up.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from yarl import URL

from tests.local.conftest import FakeUpstream, Sidecar, StartSidecar


async def _post(
    url: str, body: bytes, content_type: str = "application/json", **kw: Any
) -> tuple[int, Any, bytes]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, data=body, headers={"Content-Type": content_type}, **kw) as r,
    ):
        raw = await r.read()
        parsed = await r.json(content_type=None) if raw.startswith(b"{") else None
        return r.status, parsed, raw


def _transform_errors(sc: Sidecar, provider: str, stage: str) -> float:
    return sc.metric("promptcache_transform_errors_total", provider=provider, stage=stage)


@pytest.mark.parametrize(
    ("body", "content_type", "stage"),
    [
        (b'{"model": "claude-x", "messages": [', "application/json", "parse"),
        (b'{"model":"claude-\xff\xfe","max_tokens":1}', "application/json", "parse"),
        (b"[1, 2, 3]", "application/json", "parse"),
        (b'{"model":"claude-x","max_tokens":1}', "text/plain", "content_type"),
    ],
    ids=["malformed-json", "invalid-utf8", "not-an-object", "wrong-content-type"],
)
async def test_unparseable_bodies_go_upstream_unchanged(
    start_sidecar: StartSidecar,
    fake_upstream: FakeUpstream,
    body: bytes,
    content_type: str,
    stage: str,
) -> None:
    sc = await start_sidecar()
    code, _, _ = await _post(sc.url + "/v1/messages", body, content_type)
    assert code < 500
    assert fake_upstream.requests[-1].body == body
    assert fake_upstream.requests[-1].headers["content-type"] == content_type
    assert _transform_errors(sc, "anthropic", stage) == 1


async def test_empty_body_goes_upstream(
    start_sidecar: StartSidecar, fake_upstream: FakeUpstream
) -> None:
    sc = await start_sidecar()
    code, payload, _ = await _post(sc.openai_url + "/chat/completions", b"")
    assert code == 400  # the upstream's verdict, relayed
    assert payload["error"]["message"] == "invalid JSON body"
    assert fake_upstream.requests[-1].body == b""


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_oversize_body_is_a_provider_shaped_413(
    start_sidecar: StartSidecar, fake_upstream: FakeUpstream, chunked: bool
) -> None:
    sc = await start_sidecar(max_body_bytes=4096)
    big = b'{"model":"gpt-4o","messages":[{"role":"user","content":"' + b"x" * 10_000 + b'"}]}'

    async def gen() -> Any:
        for i in range(0, len(big), 1000):
            yield big[i : i + 1000]

    async with aiohttp.ClientSession() as http:
        data: Any = gen() if chunked else big
        async with http.post(
            sc.url + "/v1/chat/completions",
            data=data,
            headers={"Content-Type": "application/json"},
        ) as r:
            assert r.status == 413
            payload = await r.json()
        assert payload["error"]["code"] == "request_too_large"
        assert set(payload["error"]) == {"message", "type", "param", "code"}
        async with http.post(
            sc.url + "/v1/messages", data=big, headers={"Content-Type": "application/json"}
        ) as r:
            assert r.status == 413
            anthropic_shaped = await r.json()
        assert anthropic_shaped["type"] == "error"
        assert anthropic_shaped["error"]["type"] == "request_too_large"
    assert fake_upstream.requests == []


async def test_client_too_slow_is_a_408(
    start_sidecar: StartSidecar, fake_upstream: FakeUpstream
) -> None:
    sc = await start_sidecar(client_body_timeout=0.3)
    url = URL(sc.url)
    assert url.host is not None
    assert url.port is not None
    reader, writer = await asyncio.open_connection(url.host, url.port)
    writer.write(
        b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n" + b'{"model":'
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
    writer.close()
    assert head.startswith(b"HTTP/1.1 408")
    assert fake_upstream.requests == []


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/models?limit=5"),
        ("POST", "/v1/messages/count_tokens"),
        ("DELETE", "/v1/files/file_123"),
        ("GET", "/v1/messages"),
    ],
)
async def test_unknown_paths_pass_through(
    start_sidecar: StartSidecar, fake_upstream: FakeUpstream, method: str, path: str
) -> None:
    sc = await start_sidecar()
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, sc.url + path, data=b'{"a":1}' if method == "POST" else None) as r,
    ):
        assert r.status == 200
        payload = await r.json()
    assert payload["path"] == path.partition("?")[0]
    assert fake_upstream.requests[-1].path == path
    assert fake_upstream.requests[-1].method == method


async def test_the_sidecar_stays_up_after_bad_input(
    start_sidecar: StartSidecar, fake_upstream: FakeUpstream
) -> None:
    sc = await start_sidecar(max_body_bytes=4096)
    for body in (b"", b"{", b"\xff" * 10, b"x" * 5000, b"null"):
        code, _, _ = await _post(sc.url + "/v1/messages", body)
        assert code in (400, 413)
    async with aiohttp.ClientSession() as http:
        async with http.get(sc.admin_url + "/healthz") as r:
            assert r.status == 200
        async with http.get(sc.admin_url + "/readyz") as r:
            assert r.status == 200


async def test_large_or_chunked_pass_through_bodies_are_streamed(
    start_sidecar: StartSidecar, fake_upstream: FakeUpstream
) -> None:
    sc = await start_sidecar(max_body_bytes=4096)
    upload = bytes(range(256)) * 100  # 25.6 KB, over the proxied routes' limit

    async def chunks() -> Any:
        for i in range(0, len(upload), 4096):
            yield upload[i : i + 4096]

    async with aiohttp.ClientSession() as http:
        async with http.post(sc.url + "/v1/files", data=chunks()) as r:
            assert r.status == 200
        assert fake_upstream.requests[-1].body == upload
        async with http.head(sc.url + "/v1/models") as r:
            assert r.status == 200
            assert r.headers["Content-Length"] != "0"
