"""Real HTTP context services on loopback, for the context fetcher's tests.

One ``ContextService`` is an aiohttp server on 127.0.0.1 (a free port) whose routes
answer the ways a context source can: slowly, with an error status, too much, not text,
flaky, or echoing what it was sent. It counts hits per route key so that tests can tell
whether the fetcher went to the network.

The context fetcher's test modules share the fixtures ``service`` (one running
``ContextService``), ``session`` and ``registry`` by importing ``service_fixture``,
``session_fixture`` and ``registry_fixture`` from here, and build policies with
``policy``.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from prometheus_client import CollectorRegistry

from promptcache.policy import PolicySpec, parse_policy

NO_HEADERS: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())
"""The app's request headers, when a test sends none."""


class ContextService:
    """A context service answering every route after ``delay`` seconds."""

    def __init__(self, *, delay: float = 0.0) -> None:
        self.delay = delay
        self.hits: Counter[str] = Counter()
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    @classmethod
    @asynccontextmanager
    async def running(cls, *, delay: float = 0.0) -> AsyncIterator[ContextService]:
        service = cls(delay=delay)
        await service.start()
        try:
            yield service
        finally:
            await service.close()

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/text/{key}", self._text)
        app.router.add_get("/echo/{segment}", self._echo)
        app.router.add_get("/status/{code}", self._status)
        app.router.add_get("/big/{size}", self._big)
        app.router.add_get("/stream/{size}", self._stream)
        app.router.add_get("/binary", self._binary)
        app.router.add_get("/untyped", self._untyped)
        app.router.add_get("/octets", self._octets)
        app.router.add_get("/flaky/{key}/{fails}", self._flaky)
        app.router.add_get("/sleep/{seconds}", self._sleep)
        app.router.add_post("/text/{key}", self._text)
        app.router.add_post("/search", self._search)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"
        return self.base_url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _pause(self, key: str) -> None:
        self.hits[key] += 1
        if self.delay:
            await asyncio.sleep(self.delay)

    async def _text(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        await self._pause(key)
        return web.Response(text=f"{key} context ({request.method})")

    async def _echo(self, request: web.Request) -> web.Response:
        await self._pause("echo")
        echoed = {
            "raw_path": request.raw_path,
            "segment": request.match_info["segment"],
            "headers": {k.lower(): v for k, v in request.headers.items() if k.lower() != "host"},
        }
        return web.json_response(echoed)

    async def _search(self, request: web.Request) -> web.Response:
        """A retrieval service: answers with what it was asked, as it received it."""
        await self._pause("search")
        received = {"content_type": request.content_type, "json": await request.json()}
        return web.json_response(received)

    async def _status(self, request: web.Request) -> web.Response:
        code = int(request.match_info["code"])
        await self._pause(f"status-{code}")
        headers = {"Location": "/text/moved"} if 300 <= code < 400 else None
        return web.Response(status=code, text=f"answer {code}", headers=headers)

    async def _big(self, request: web.Request) -> web.Response:
        await self._pause("big")
        return web.Response(text="x" * int(request.match_info["size"]))

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        await self._pause("stream")
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        remaining = int(request.match_info["size"])
        while remaining > 0:
            n = min(1000, remaining)
            await resp.write(b"y" * n)
            remaining -= n
        await resp.write_eof()
        return resp

    async def _binary(self, request: web.Request) -> web.Response:
        await self._pause("binary")
        return web.Response(body=b"\x89PNG\r\n", content_type="image/png")

    async def _untyped(self, request: web.Request) -> web.StreamResponse:
        await self._pause("untyped")
        body = b"plain words, no content type"
        # aiohttp then declares application/octet-stream: "type unknown".
        resp = web.StreamResponse(headers={"Content-Length": str(len(body))})
        await resp.prepare(request)
        await resp.write(body)
        await resp.write_eof()
        return resp

    async def _octets(self, request: web.Request) -> web.Response:
        await self._pause("octets")
        return web.Response(body=b"\x00\x01\xff binary", content_type="application/octet-stream")

    async def _flaky(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        await self._pause(f"flaky-{key}")
        if self.hits[f"flaky-{key}"] <= int(request.match_info["fails"]):
            return web.Response(status=503, text="try again")
        return web.Response(
            text=json.dumps({"key": key, "ok": True}), content_type="application/json"
        )

    async def _sleep(self, request: web.Request) -> web.Response:
        await self._pause("sleep")
        await asyncio.sleep(float(request.match_info["seconds"]))
        return web.Response(text="finally")


def closed_port_url() -> str:
    """A loopback URL nothing listens on (the port was bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def policy(*sources: dict[str, Any], **spec: Any) -> PolicySpec:
    """A policy with ``sources`` as its ``contextSources`` and ``spec``'s other fields."""
    return parse_policy({"contextSources": list(sources), **spec})


def fetch_failures(registry: CollectorRegistry, source: str, reason: str) -> float | None:
    """``promptcache_context_fetch_failures_total`` of policy ``p``'s ``source``."""
    return registry.get_sample_value(
        "promptcache_context_fetch_failures_total",
        {"policy": "p", "source": source, "reason": reason},
    )


@pytest.fixture(name="service")
async def service_fixture() -> AsyncIterator[ContextService]:
    """One running ``ContextService`` without delay."""
    async with ContextService.running() as svc:
        yield svc


@pytest.fixture(name="session")
async def session_fixture() -> AsyncIterator[aiohttp.ClientSession]:
    """The fetcher's client session."""
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture(name="registry")
def registry_fixture() -> CollectorRegistry:
    """A fresh registry for the fetcher's metrics."""
    return CollectorRegistry()
