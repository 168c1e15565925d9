"""An upstream refusing (400/422) what the sidecar sent, through the real sidecar.

* An OpenAI-compatible server that refuses unknown fields gets the app's own bytes when
  it refuses the ``stream_options`` the sidecar added, whether or not its error names
  the field, with 400 or 422; the refusal is remembered, so the next call goes without
  the field and costs one request.
* A genuine app error on a planned request (the error names a place the app sent
  unchanged) is relayed once: not resent, not counted as ``upstream_rejected``.
* A refusal that names a place the sidecar changed is resent as the app's bytes.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.local.conftest import FakeUpstream, Sidecar, StartSidecar, status

ALLOWED = {"model", "messages", "stream", "max_tokens", "temperature"}
STATIC = "You are the support agent of Example Shop. Follow the refund policy. " * 60


class StrictServer:
    """An OpenAI-compatible server (vLLM, say) that refuses fields it does not know."""

    def __init__(self, *, status: int, names_field: bool) -> None:
        self.status = status
        self.names_field = names_field
        self.bodies: list[dict[str, Any]] = []

    def _refusal(self, field: str) -> web.Response:
        if self.status == 422:  # FastAPI's validation error
            detail = [{"type": "extra_forbidden", "loc": ["body", field], "msg": "Extra inputs"}]
            return web.json_response({"detail": detail}, status=422)
        message = "Extra inputs are not permitted"
        if self.names_field:
            message = f"[{{'type': 'extra_forbidden', 'loc': ('body', '{field}')}}]"
        error = {"object": "error", "message": message, "type": "BadRequestError", "code": 400}
        return web.json_response(error, status=400)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        unknown = sorted(set(body) - ALLOWED)
        if unknown:
            return self._refusal(unknown[0])
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await out.prepare(request)
        for word in ("Hello", " there"):
            chunk = {
                "id": "cmpl-1",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": body["model"],
                "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}],
            }
            await out.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await out.write(b"data: [DONE]\n\n")
        await out.write_eof()
        return out


@pytest.fixture
async def strict_server(request: pytest.FixtureRequest) -> AsyncIterator[tuple[StrictServer, str]]:
    code, names = request.param
    strict = StrictServer(status=code, names_field=names)
    app = web.Application()
    app.router.add_post("/v1/chat/completions", strict.chat)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield strict, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


def _policy(tmp_path: Path, spec: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(f"kind: PromptPolicy\nmetadata: {{name: agent}}\nspec: {spec}\n")
    return path


def _rejected(sc: Sidecar, provider: str) -> float:
    return sc.metric(
        "promptcache_transform_errors_total", provider=provider, stage="upstream_rejected"
    )


@pytest.mark.parametrize("strict_server", [(400, False), (400, True), (422, True)], indirect=True)
async def test_a_refused_addition_gets_the_apps_bytes_and_is_remembered(
    start_sidecar: StartSidecar, strict_server: tuple[StrictServer, str], tmp_path: Path
) -> None:
    strict, url = strict_server
    policy = _policy(tmp_path, "{provider: openai-compatible}")
    sc = await start_sidecar(openai_upstream=url, policy=policy)
    async with openai.AsyncOpenAI(api_key="k", base_url=sc.openai_url, max_retries=0) as client:
        for _ in range(2):
            stream = await client.chat.completions.create(
                model="llama-3", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            text = "".join([c.choices[0].delta.content or "" async for c in stream])
            assert text == "Hello there"
    # First call: the sidecar's addition, refused, then the app's bytes; second: one request.
    assert ["stream_options" in body for body in strict.bodies] == [True, False, False]
    assert _rejected(sc, "openai-compatible") == 1


async def test_a_genuine_app_error_on_a_planned_request_is_relayed_once(
    start_sidecar: StartSidecar, fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    policy = _policy(tmp_path, f"{{staticBlocks: [{{name: core, content: {STATIC!r}}}]}}")
    sc = await start_sidecar(policy=policy)
    # The app's own max_tokens is what the provider refuses: the sidecar changed the
    # system prompt, not that.
    error = {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: too large"},
    }
    fake_upstream.then(status(400, error))
    async with anthropic.AsyncAnthropic(api_key="k", base_url=sc.url, max_retries=0) as client:
        with pytest.raises(anthropic.BadRequestError):
            await client.messages.create(
                model="claude-sonnet-4-6",
                max_tokens=10,
                messages=[{"role": "user", "content": "hi"}],
            )
    (sent,) = fake_upstream.requests  # once, not twice
    assert STATIC.strip().encode() in sent.body  # it was a planned request
    assert _rejected(sc, "anthropic") == 0


async def test_a_refusal_of_what_the_sidecar_changed_gets_the_apps_bytes(
    start_sidecar: StartSidecar, fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    policy = _policy(tmp_path, f"{{staticBlocks: [{{name: core, content: {STATIC!r}}}]}}")
    sc = await start_sidecar(policy=policy)
    error = {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "system.0.cache_control.ttl: Input should be '5m' or '1h'",
        },
    }
    fake_upstream.then(status(400, error))
    async with anthropic.AsyncAnthropic(api_key="k", base_url=sc.url, max_retries=0) as client:
        message = await client.messages.create(
            model="claude-sonnet-4-6", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert message.content
    planned, original = (r.body for r in fake_upstream.requests)
    assert STATIC.strip().encode() in planned
    assert STATIC.strip().encode() not in original
    assert _rejected(sc, "anthropic") == 1
    # The plan did not go upstream: no breakpoint of it is counted, no miss diagnosed.
    assert sc.metric("promptcache_breakpoints_total", policy="agent", tier="system") == 0
    assert sc.metric("promptcache_cache_misses_total", policy="agent", reason="first_write") == 0
