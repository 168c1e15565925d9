"""Reading a context answer: text only, never more than ``maxBytes``.

The answer is streamed and reading stops one byte past the limit, so a source that
sends megabytes costs the sidecar at most ``maxBytes`` of memory. A declared content
type must be textual (``text/*``, JSON, XML, YAML and their ``+json``/``+xml``
variants); without one, or with ``application/octet-stream`` (what many servers send
when they do not know), the bytes must be UTF-8 with no NUL.
"""

from __future__ import annotations

import codecs

import aiohttp
from aiohttp import hdrs

from promptcache.sidecar.context.errors import SourceError

TEXT_TYPES = frozenset(
    {
        "application/json",
        "application/x-ndjson",
        "application/jsonl",
        "application/xml",
        "application/yaml",
        "application/x-yaml",
        "application/javascript",
        "application/markdown",
    }
)
"""Non-``text/*`` media types that are text a model can read."""
_TEXT_SUFFIXES = ("+json", "+xml", "+yaml")
_UNKNOWN_TYPE = "application/octet-stream"
_CHUNK = 64 * 1024


def is_text_type(media_type: str) -> bool:
    """Whether a media type (no parameters, lower case) is readable text."""
    return (
        media_type.startswith("text/")
        or media_type in TEXT_TYPES
        or media_type.endswith(_TEXT_SUFFIXES)
    )


def decode(data: bytes, *, declared: bool, charset: str | None) -> str:
    """Bytes as text: the declared charset (UTF-8 by default), else strict UTF-8."""
    if not declared:
        if b"\0" in data:
            raise SourceError("not_text")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SourceError("not_text") from exc
    try:
        codecs.lookup(charset or "utf-8")
    except LookupError:
        charset = "utf-8"
    return data.decode(charset or "utf-8", errors="replace")


async def read_text(resp: aiohttp.ClientResponse, *, max_bytes: int) -> tuple[str, int]:
    """The answer's text and its size in bytes; ``not_text`` or ``too_large`` otherwise."""
    declared = hdrs.CONTENT_TYPE in resp.headers and resp.content_type != _UNKNOWN_TYPE
    if declared and not is_text_type(resp.content_type):
        raise SourceError("not_text", status=resp.status)
    if resp.content_length is not None and resp.content_length > max_bytes:
        raise SourceError("too_large", status=resp.status)
    buf = bytearray()
    while chunk := await resp.content.read(min(_CHUNK, max_bytes + 1 - len(buf))):
        buf += chunk
        if len(buf) > max_bytes:
            raise SourceError("too_large", status=resp.status)
    return decode(bytes(buf), declared=declared, charset=resp.charset), len(buf)
