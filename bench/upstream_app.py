"""A fast Python upstream: reads the request body, answers the fixed message at once.

The second benchmark scenario puts every path in front of a server of the kind apps
really sit in front of locally (the provider simulator is one), so requests per second
compare the proxies where the upstream, not nginx's own speed, sets the pace.

    python -m bench.upstream_app PORT
"""

from __future__ import annotations

import re
import sys

from aiohttp import web

from bench.payload import message_json, message_sse

_STREAMED = re.compile(rb'"stream":\s*true')


def create_app() -> web.Application:
    whole = message_json().encode()
    stream = message_sse().encode()

    async def answer(request: web.Request) -> web.Response:
        body = await request.read()
        # Peers forward the body, not the bench's header: a streamed call says so in it.
        if request.headers.get("x-bench-stream") or _STREAMED.search(body):
            return web.Response(body=stream, content_type="text/event-stream")
        return web.Response(body=whole, content_type="application/json")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", answer)
    return app


def main() -> None:
    web.run_app(create_app(), host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
