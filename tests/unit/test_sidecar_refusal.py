"""Whose fault a refusal is: the places an error names, compared in both bodies."""

from __future__ import annotations

import json

from multidict import CIMultiDict

from promptcache.sidecar.headers import client_retries, readable_encodings
from promptcache.sidecar.refusal import RefusedAdditions, app_is_at_fault, named_places

APP = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
SENT = APP | {
    "system": [{"type": "text", "text": "S", "cache_control": {"type": "ephemeral"}}],
    "stream_options": {"include_usage": True},
}


def _b(value: object) -> bytes:
    return json.dumps(value).encode()


def test_places_are_read_in_each_providers_shape() -> None:
    anthropic = {"type": "error", "error": {"message": "messages.0.content: Field required"}}
    assert named_places(_b(anthropic)) == [["messages", 0, "content"]]
    openai = {"error": {"message": "Invalid value", "param": "messages[0].role"}}
    assert named_places(_b(openai)) == [["messages", 0, "role"]]
    fastapi = {"detail": [{"loc": ["body", "stream_options"], "msg": "Extra inputs"}]}
    assert named_places(_b(fastapi)) == [["stream_options"]]
    vllm = {"object": "error", "message": "[{'type': 'extra_forbidden', 'loc': ('body', 'x')}]"}
    assert named_places(_b(vllm)) == [["x"]]
    assert named_places(_b({"error": {"message": "Extra inputs are not permitted"}})) == []
    assert named_places(b"<html>bad gateway</html>") == []


def test_the_app_is_at_fault_only_where_both_bodies_agree() -> None:
    def fault(message: str) -> bool:
        return app_is_at_fault(_b({"error": {"message": message}}), _b(APP), _b(SENT))

    assert fault("max_tokens: Input should be less than 4")
    assert fault("temperature: Field required")  # missing from both
    assert fault("messages.0.content: too short")
    assert not fault("stream_options: Extra inputs are not permitted")
    assert not fault("system.0.cache_control.ttl: Input should be '5m' or '1h'")
    assert not fault("A maximum of 4 blocks with cache_control may be provided")


def test_refused_additions_are_bounded_and_forgotten() -> None:
    memory = RefusedAdditions(limit=2, forget_after=0.0)
    assert not memory.refused("a", "include_usage")
    memory.remember("a", "include_usage")
    assert not memory.refused("a", "include_usage")  # forget_after 0: forgotten at once
    memory = RefusedAdditions(limit=2)
    for upstream in ("a", "b", "c"):
        memory.remember(upstream, "include_usage")
    assert not memory.refused("a", "include_usage")  # the oldest went first
    assert memory.refused("c", "include_usage")


def test_only_readable_codings_are_offered_upstream() -> None:
    headers: CIMultiDict[str] = CIMultiDict({"Accept-Encoding": "gzip, deflate, br, zstd"})
    readable_encodings(headers, stream=False)
    assert headers["accept-encoding"] == "gzip, deflate"
    headers = CIMultiDict({"Accept-Encoding": "zstd;q=1.0, br"})
    readable_encodings(headers, stream=False)
    assert headers["accept-encoding"] == "identity"
    headers = CIMultiDict({"Accept-Encoding": "gzip"})
    readable_encodings(headers, stream=True)
    assert headers["accept-encoding"] == "identity"
    headers = CIMultiDict()
    readable_encodings(headers, stream=False)
    assert "accept-encoding" not in headers
    assert client_retries({"x-stainless-retry-count": "0"})
    assert not client_retries({})
