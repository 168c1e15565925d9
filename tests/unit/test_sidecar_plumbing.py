"""Settings precedence, provider-shaped errors, hop-by-hop headers, retry-after parsing."""

from __future__ import annotations

import argparse
import email.utils
import json
import time

import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from pydantic import ValidationError
from yarl import URL

from promptcache.sidecar.cli import configure, settings_from
from promptcache.sidecar.config import SidecarSettings, split_host_port
from promptcache.sidecar.errors import error_payload, sse_error_event
from promptcache.sidecar.headers import client_response_headers, upstream_request_headers
from promptcache.sidecar.upstream import env_proxy, parse_retry_after
from promptcache.telemetry import setup_tracing, tracing_enabled


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure(parser, "sidecar")
    return parser.parse_args(argv)


def test_flags_beat_env_beat_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTCACHE_LISTEN", "127.0.0.1:9000")
    monkeypatch.setenv("PROMPTCACHE_OPENAI_UPSTREAM", "http://vllm:8000/")
    monkeypatch.setenv("PROMPTCACHE_MAX_BODY_BYTES", "2048")
    settings = settings_from(_args("--listen", "127.0.0.1:9100"))
    assert settings.listen == "127.0.0.1:9100"
    assert settings.openai_upstream == "http://vllm:8000"
    assert settings.anthropic_upstream == "https://api.anthropic.com"
    assert settings.admin_listen == "0.0.0.0:9787"
    assert settings.max_body_bytes == 2048


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValidationError):
        SidecarSettings(anthropic_upstream="ftp://x")
    with pytest.raises(ValidationError):
        SidecarSettings(listen="8787")


def test_split_host_port() -> None:
    assert split_host_port("127.0.0.1:8787") == ("127.0.0.1", 8787)
    assert split_host_port("[::1]:80") == ("::1", 80)
    assert split_host_port(":9787") == ("0.0.0.0", 9787)


def test_error_shapes() -> None:
    anthropic = error_payload("anthropic", 413, "too big")
    assert anthropic == {
        "type": "error",
        "error": {"type": "request_too_large", "message": "too big"},
    }
    openai = error_payload("openai", 504, "slow")
    assert openai == {
        "error": {
            "message": "slow",
            "type": "server_error",
            "param": None,
            "code": "upstream_timeout",
        }
    }
    event = sse_error_event("anthropic", "broke")
    assert event.startswith(b"event: error\ndata: ")
    assert event.endswith(b"\n\n")
    assert json.loads(event.split(b"data: ", 1)[1])["error"]["message"] == "broke"
    assert json.loads(sse_error_event("openai", "broke")[6:])["error"]["message"] == "broke"


def test_hop_by_hop_headers_are_dropped() -> None:
    incoming = CIMultiDictProxy(
        CIMultiDict(
            [
                ("Host", "127.0.0.1:8787"),
                ("Connection", "keep-alive, X-Private"),
                ("X-Private", "1"),
                ("Keep-Alive", "timeout=5"),
                ("Content-Length", "10"),
                ("Transfer-Encoding", "chunked"),
                ("x-api-key", "k"),
                ("Accept-Encoding", "gzip"),
                ("anthropic-beta", "a"),
                ("anthropic-beta", "b"),
            ]
        )
    )
    out = upstream_request_headers(incoming)
    assert list(out.items()) == [
        ("x-api-key", "k"),
        ("Accept-Encoding", "gzip"),
        ("anthropic-beta", "a"),
        ("anthropic-beta", "b"),
    ]
    back = client_response_headers(incoming, keep_length=True)
    assert back["Content-Length"] == "10"
    assert "Transfer-Encoding" not in back
    assert "Content-Length" not in client_response_headers(incoming, keep_length=False)


def test_retry_after() -> None:
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("0.5") == 0.5
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    seconds = parse_retry_after(when)
    assert seconds is not None
    assert 25 < seconds <= 31


def test_tracing_only_with_an_endpoint() -> None:
    assert not tracing_enabled({})
    assert tracing_enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert tracing_enabled({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"})
    assert not tracing_enabled(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}
    )
    assert setup_tracing("svc", environ={}) is None
    provider = setup_tracing(
        "svc",
        environ={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_SERVICE_NAME": "x"},
    )
    assert provider is not None
    assert provider.resource.attributes["service.name"] == "x"
    provider.shutdown()


def test_env_proxy_is_honoured_except_for_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://user:pw@egress:3128")
    monkeypatch.setenv("NO_PROXY", "internal.example")
    proxy, auth = env_proxy(URL("https://api.anthropic.com"))
    assert proxy == URL("http://egress:3128")
    assert auth is not None
    assert auth.login == "user"
    assert env_proxy(URL("https://internal.example")) == (None, None)
    assert env_proxy(URL("http://127.0.0.1:8080")) == (None, None)
    monkeypatch.delenv("HTTPS_PROXY")
    assert env_proxy(URL("https://api.openai.com")) == (None, None)
