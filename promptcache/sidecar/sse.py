"""Server-sent events relayed as they come, with the usage read on the way past.

The sidecar must not hold back a streamed answer (the app's time to first token is the
product), yet it must learn the call's token usage from that stream: Anthropic reports it
in ``message_start`` and then cumulatively in ``message_delta``; OpenAI Chat Completions
in one extra last chunk (``choices: []``) when ``stream_options.include_usage`` is set;
the Responses API in ``response.completed``. ``EventSplitter`` cuts the byte stream at
event boundaries, so only an unfinished event is ever held; the taps look inside an event
only when a cheap byte test says it may carry usage, and can drop the usage chunk that
the sidecar itself asked for.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

from promptcache.sidecar import jsoncodec
from promptcache.usage import Usage, from_anthropic, from_openai

_BOUNDARY = re.compile(rb"\r\n\r\n|\n\n|\r\r")


class EventSplitter:
    """Splits a byte stream into blocks of whole events; keeps an unfinished tail."""

    __slots__ = ("_tail",)

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, chunk: bytes) -> bytes:
        """The complete events now available (possibly ``b""``), in one block."""
        data = self._tail + chunk if self._tail else chunk
        end = 0
        for sep in (b"\n\n", b"\r\n\r\n", b"\r\r"):
            at = data.rfind(sep)
            if at >= 0:
                end = max(end, at + len(sep))
        self._tail = data[end:]
        return data[:end]

    @property
    def pending(self) -> bytes:
        """An unfinished event held back (dropped if the stream breaks)."""
        return self._tail


def split_events(block: bytes) -> list[bytes]:
    """The events of a block from ``EventSplitter.feed``, each without its separator."""
    return [e for e in _BOUNDARY.split(block) if e]


def event_data(event: bytes) -> bytes:
    """The ``data`` field of one event (multi-line data joined with newlines)."""
    lines = [
        line[5:].removeprefix(b" ")
        for line in event.replace(b"\r\n", b"\n").split(b"\n")
        if line.startswith(b"data:")
    ]
    return b"\n".join(lines)


def _json(data: bytes) -> dict[str, Any] | None:
    try:
        value = jsoncodec.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class UsageTap(Protocol):
    """Reads usage out of a stream; may rewrite a block (to drop an injected chunk)."""

    usage: Usage | None
    model: str | None
    error: bool

    def process(self, block: bytes) -> bytes: ...


def _anthropic_interesting(data: bytes) -> bool:
    return b"message_start" in data or b"message_delta" in data or b"event: error" in data


class AnthropicTap:
    """``message_start`` gives input and cache usage; ``message_delta`` is cumulative."""

    __slots__ = ("_merged", "error", "message", "model", "usage")

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.model: str | None = None
        self.error = False
        self.message: dict[str, Any] | None = None
        """``message_start``'s ``id`` and ``diagnostics`` (cache diagnostics chaining)."""
        self._merged: dict[str, Any] = {}

    def process(self, block: bytes) -> bytes:
        if _anthropic_interesting(block):
            for event in split_events(block):
                if _anthropic_interesting(event):
                    self._event(event)
        return block

    def _event(self, event: bytes) -> None:
        data = _json(event_data(event))
        if data is None:
            return
        kind = data.get("type")
        if kind == "message_start":
            message = data.get("message")
            if isinstance(message, dict):
                self.message = {k: message[k] for k in ("id", "diagnostics") if k in message}
                if isinstance(message.get("model"), str):
                    self.model = message["model"]
                if isinstance(message.get("usage"), dict):
                    self._merged.update(message["usage"])
        elif kind == "message_delta":
            if isinstance(data.get("usage"), dict):
                # Cumulative: each field replaces the earlier value, never adds to it.
                self._merged.update({k: v for k, v in data["usage"].items() if v is not None})
        elif kind == "error":
            self.error = True
            return
        else:
            return
        self.usage = from_anthropic(self._merged)


_NULL_USAGE = (b',"usage":null', b'"usage":null,', b', "usage": null', b'"usage": null, ')


def _without_null_usage(block: bytes) -> bytes:
    """``block`` without the top-level ``"usage":null`` that ``include_usage`` adds.

    Inside a JSON string a quote is escaped (``\\"``), so these bytes can only be a key.
    """
    for pattern in _NULL_USAGE:
        if pattern in block:
            block = block.replace(pattern, b"")
    return block


class OpenAIChatTap:
    """The ``include_usage`` chunk (``choices: []``); dropped if the sidecar asked for it.

    With ``include_usage`` every other chunk carries ``"usage":null`` too; when the
    sidecar asked for it (``strip``) that key is cut from each chunk, so the app reads
    the bytes it would have read without the sidecar.
    """

    __slots__ = ("error", "model", "strip", "usage")

    def __init__(self, *, strip: bool) -> None:
        self.usage: Usage | None = None
        self.model: str | None = None
        self.error = False
        self.strip = strip

    def process(self, block: bytes) -> bytes:
        if self.model is None and b'"model"' in block:
            self._model(block)
        if self.strip and b'"usage":' in block:
            block = _without_null_usage(block)
        if b'"usage":{' not in block and b'"usage": {' not in block and b'"error"' not in block:
            return block
        kept: list[bytes] = []
        dropped = False
        for event in split_events(block):
            if self._event(event) and self.strip:
                dropped = True
            else:
                kept.append(event)
        if not dropped:
            return block
        return b"".join(e + b"\n\n" for e in kept)

    def _model(self, block: bytes) -> None:
        for event in split_events(block):
            data = _json(event_data(event))
            if data is not None and isinstance(data.get("model"), str):
                self.model = data["model"]
                return

    def _event(self, event: bytes) -> bool:
        """Reads usage; True if this is the usage-only chunk."""
        data = _json(event_data(event))
        if data is None:
            return False
        if "error" in data and "choices" not in data:
            self.error = True
            return False
        usage = data.get("usage")
        if not isinstance(usage, dict):
            return False
        self.usage = from_openai(usage)
        return data.get("choices") == []


class ResponsesTap:
    """The Responses API's final ``response.completed`` (or incomplete/failed) event."""

    __slots__ = ("error", "model", "usage")

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.model: str | None = None
        self.error = False

    def process(self, block: bytes) -> bytes:
        if b'"usage"' not in block and b"error" not in block:
            return block
        for event in split_events(block):
            data = _json(event_data(event))
            if data is None:
                continue
            kind = data.get("type")
            if kind in ("error", "response.failed"):
                self.error = True
            response = data.get("response")
            if isinstance(response, dict):
                if isinstance(response.get("model"), str):
                    self.model = response["model"]
                if isinstance(response.get("usage"), dict):
                    self.usage = from_openai(response["usage"])
        return block


def usage_from_body(family: str, body: bytes) -> tuple[Usage | None, str | None]:
    """Usage and model of a whole (non-streamed) JSON answer."""
    data = _json(body)
    if data is None:
        return None, None
    model = data.get("model") if isinstance(data.get("model"), str) else None
    usage = data.get("usage")
    if not isinstance(usage, dict):
        return None, model
    if family == "anthropic":
        return from_anthropic(usage), model
    return from_openai(usage), model
