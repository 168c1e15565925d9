"""The operator's small API client against a real aiohttp server on loopback."""

from __future__ import annotations

from typing import Any

import kopf
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from promptcache_operator.kube import (
    MERGE_PATCH,
    ConflictError,
    KubeClient,
    KubeError,
    NotFoundError,
    core_path,
    group_path,
)

Seen = list[tuple[str, str, str, str | None, Any]]


@pytest.fixture
async def api(aiohttp_server: Any) -> tuple[TestServer, Seen]:
    seen: Seen = []

    async def handle(request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        seen.append(
            (
                request.method,
                request.path,
                request.headers.get("Authorization", ""),
                request.headers.get("Content-Type"),
                body,
            )
        )
        if request.headers.get("Authorization") != "Bearer fresh":
            return web.json_response({"kind": "Status", "message": "Unauthorized"}, status=401)
        if request.path == "/version":
            return web.json_response({"major": "1", "minor": "29+"})
        if request.path.endswith("/absent"):
            return web.json_response(
                {"kind": "Status", "message": 'configmaps "absent" not found'}, status=404
            )
        if request.method == "PUT":
            return web.json_response({"kind": "Status", "message": "x" * 1000}, status=409)
        if request.path == "/broken":
            return web.Response(text="<html>gateway</html>", status=502, reason="Bad Gateway")
        return web.json_response({"ok": True, "echo": body})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    server: TestServer = await aiohttp_server(app)
    return server, seen


def login_sequence(server: TestServer) -> Any:
    tokens = iter(["stale", "fresh", "fresh"])

    def login() -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=str(server.make_url("")), token=next(tokens))

    return login


async def test_401_logs_in_again_once(api: tuple[TestServer, Seen]) -> None:
    server, seen = api
    client = KubeClient(login=login_sequence(server))
    try:
        assert await client.server_version() == (1, 29)
        assert [s[2] for s in seen] == ["Bearer stale", "Bearer fresh"]
        assert await client.get("/api/v1/namespaces/default") == {"ok": True, "echo": None}
        assert len(seen) == 3  # the fresh session is kept
    finally:
        await client.close()


async def test_errors_are_mapped_and_cut(api: tuple[TestServer, Seen]) -> None:
    server, _ = api
    client = KubeClient(login=login_sequence(server))
    try:
        await client.server_version()
        with pytest.raises(NotFoundError, match='configmaps "absent" not found') as nf:
            await client.get(core_path("configmaps", namespace="a", name="absent"))
        assert nf.value.status == 404
        with pytest.raises(ConflictError) as conflict:
            await client.replace("/api/v1/x", {"a": 1})
        assert len(conflict.value.message) == 256
        with pytest.raises(KubeError, match="502: Bad Gateway"):
            await client.get("/broken")
    finally:
        await client.close()


async def test_merge_patch_content_type(api: tuple[TestServer, Seen]) -> None:
    server, seen = api
    client = KubeClient(login=login_sequence(server))
    try:
        await client.server_version()
        out = await client.merge_patch("/apis/x/v1/things/a/status", {"status": {"n": 1}})
        assert out["echo"] == {"status": {"n": 1}}
        assert seen[-1][0] == "PATCH"
        assert seen[-1][3] == MERGE_PATCH
        await client.create("/api/v1/namespaces/a/configmaps", {"data": {}})
        assert seen[-1][:2] == ("POST", "/api/v1/namespaces/a/configmaps")
        assert seen[-1][3] == "application/json"
    finally:
        await client.close()


async def test_unreachable_server_and_no_credentials() -> None:
    client = KubeClient(login=lambda: kopf.ConnectionInfo(server="http://127.0.0.1:1"), timeout=5)
    try:
        with pytest.raises(KubeError) as excinfo:
            await client.get("/version")
        assert excinfo.value.status == 0
    finally:
        await client.close()
    nobody = KubeClient(login=lambda: None)
    with pytest.raises(KubeError, match="no Kubernetes credentials"):
        await nobody.get("/version")


def test_paths_are_quoted() -> None:
    assert core_path("namespaces", name="a") == "/api/v1/namespaces/a"
    assert (
        core_path("configmaps", namespace="ns", name="a/b")
        == "/api/v1/namespaces/ns/configmaps/a%2Fb"
    )
    assert (
        group_path("promptcache.io/v1alpha1", "promptpolicies", namespace="ns")
        == "/apis/promptcache.io/v1alpha1/namespaces/ns/promptpolicies"
    )
