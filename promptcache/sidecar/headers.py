"""Which headers cross the sidecar: everything end-to-end, nothing hop-by-hop.

RFC 9110 section 7.6.1: ``Connection`` and the headers it names, ``Keep-Alive``,
``Proxy-*``, ``TE``, ``Trailer``, ``Transfer-Encoding`` and ``Upgrade`` belong to one
connection and must not be forwarded. ``Host`` and ``Content-Length`` are set again for
the new hop (the body may have been rewritten). Authentication (``x-api-key``,
``authorization``) passes as the app sent it; on the measured routes
``accept-encoding`` is cut to what the sidecar can read (``readable_encodings``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

from multidict import CIMultiDict, CIMultiDictProxy

RETRYING_CLIENT = "x-stainless-retry-count"
"""Sent by the official SDKs (every Stainless-generated one) on each attempt: the client
retries 408/409/429/5xx itself and obeys ``x-should-retry``."""
_READABLE = frozenset({"gzip", "x-gzip", "deflate", "identity"})
"""Content codings whose answers the sidecar can read usage from (``relay._decoded``)."""

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


def client_retries(incoming: Mapping[str, str]) -> bool:
    """The app's client retries failed attempts itself (so the sidecar must not)."""
    return RETRYING_CLIENT in incoming


def readable_encodings(headers: CIMultiDict[str], *, stream: bool) -> None:
    """Offer upstream only content codings the sidecar can read usage from.

    An answer in a coding the sidecar cannot decode (``zstd``, ``br``) would be relayed
    fine but counted as 0 tokens. A stream is read event by event, so it goes
    uncompressed; a whole answer may still come gzip- or deflate-compressed.
    """
    value = headers.get("accept-encoding")
    if value is None:
        return
    headers["accept-encoding"] = "identity" if stream else _readable(value)


@functools.lru_cache(maxsize=64)  # clients send one or two distinct values, every call
def _readable(value: str) -> str:
    kept = [
        part.strip()
        for part in value.split(",")
        if part.split(";", 1)[0].strip().lower() in _READABLE
    ]
    return ", ".join(kept) or "identity"
