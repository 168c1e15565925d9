"""The floor for a proxy written with aiohttp: read the body, post it upstream, return the answer.

No parsing, no metrics, no header filtering, no streaming: what any aiohttp-based hop
costs at least on this machine, so the sidecar's own share can be read off the table.

    python -m bench.minimal_proxy PORT UPSTREAM_URL
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

SESSION = web.AppKey("session", aiohttp.ClientSession)


def create_app(upstream: str) -> web.Application:
    async def session(app: web.Application) -> AsyncIterator[None]:
        app[SESSION] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256), auto_decompress=False
        )
        yield
        await app[SESSION].close()

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
        async with request.app[SESSION].post(
            upstream + request.path, data=body, headers=headers
        ) as r:
            data = await r.read()
            return web.Response(
                body=data, status=r.status, headers={"Content-Type": r.headers["Content-Type"]}
            )

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.cleanup_ctx.append(session)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def main() -> None:
    web.run_app(
        create_app(sys.argv[2]),
        host="127.0.0.1",
        port=int(sys.argv[1]),
        access_log=None,
        print=None,
    )


if __name__ == "__main__":
    main()
