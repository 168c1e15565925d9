"""Which headers cross the sidecar: everything end-to-end, nothing hop-by-hop.

RFC 9110 section 7.6.1: ``Connection`` and the headers it names, ``Keep-Alive``,
``Proxy-*``, ``TE``, ``Trailer``, ``Transfer-Encoding`` and ``Upgrade`` belong to one
connection and must not be forwarded. ``Host`` and ``Content-Length`` are set again for
the new hop (the body may have been rewritten). Authentication (``x-api-key``,
``authorization``) and ``accept-encoding`` pass as the app sent them.
"""

from __future__ import annotations

from multidict import CIMultiDict, CIMultiDictProxy

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_REQUEST_DROP = HOP_BY_HOP | {"host", "content-length", "expect"}


def _connection_tokens(headers: CIMultiDictProxy[str]) -> frozenset[str]:
    values = headers.getall("connection", ())
    if not values:
        return frozenset()
    return frozenset(t.strip().lower() for v in values for t in v.split(","))


def upstream_request_headers(incoming: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """The app's request headers as they go upstream."""
    named = _connection_tokens(incoming)
    out: CIMultiDict[str] = CIMultiDict()
    for key, value in incoming.items():
        lower = key.lower()
        if lower not in _REQUEST_DROP and lower not in named:
            out.add(key, value)
    return out


def client_response_headers(
    upstream: CIMultiDictProxy[str], *, keep_length: bool
) -> CIMultiDict[str]:
    """The upstream's response headers as they go to the app.

    ``keep_length`` keeps ``Content-Length`` when the body is relayed byte for byte
    (then the app's connection needs no chunked framing).
    """
    named = _connection_tokens(upstream)
    out: CIMultiDict[str] = CIMultiDict()
    for key, value in upstream.items():
        lower = key.lower()
        if lower in named or lower in HOP_BY_HOP:
            continue
        if lower == "content-length" and not keep_length:
            continue
        out.add(key, value)
    return out
