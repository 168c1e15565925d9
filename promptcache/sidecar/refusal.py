"""When an upstream refuses a request the sidecar changed: whose fault was it?

The sidecar must never fail a call that succeeds without it, so a refusal (400 or 422)
of changed bytes is answered by sending the app's own bytes, unless the refusal is
clearly about something the app sent unchanged: then the app's request would fail just
the same, and a second request would only double a genuine app error (and raise a
false ``upstream_rejected`` alarm).

"Clearly" means the error names where the problem is, and every place it names holds
the same value in the app's body and in the body that was sent (compared at the deepest
part of the place that either body has, so a field missing from both is the same).
Providers name places three ways: a ``field.path: reason`` message (Anthropic), a
``param`` (OpenAI), and a ``loc`` list (FastAPI/pydantic servers such as vLLM, also
inside a message string). An error that names no place may be the sidecar's doing.

``RefusedAdditions`` remembers, per upstream, the fields the sidecar adds on its own
(``stream_options.include_usage``, Anthropic ``diagnostics``) that the upstream refused,
so that later calls do not pay a refused request first. It is bounded and forgets after
a while, so that an upstream upgraded in place gets the addition again.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from typing import Any, Final, Literal

from promptcache.sidecar import jsoncodec

REFUSALS: Final = frozenset({400, 422})
Addition = Literal["include_usage", "diagnostics"]
"""A field the sidecar adds to every request of a kind (not a per-request plan edit)."""

_MESSAGE_PATH = re.compile(r"^\s*([A-Za-z_]\w*(?:(?:\.\w+)|(?:\[\d+\]))*)\s*:")
_LOC = re.compile(r"""['"]loc['"]\s*:\s*[\(\[]([^\)\]]*)[\)\]]""")
_LOC_ITEM = re.compile(r"""'([^']*)'|"([^"]*)"|(-?\d+)""")
_MISSING = object()


def _parts(path: str) -> list[str | int]:
    out: list[str | int] = []
    for token in re.findall(r"\w+", path):
        out.append(int(token) if token.isdigit() else token)
    return out


def _loc_parts(items: list[Any]) -> list[str | int]:
    parts: list[str | int] = [p if isinstance(p, int) else str(p) for p in items]
    if parts and parts[0] == "body":  # FastAPI: the request body
        parts = parts[1:]
    return parts


def named_places(error: bytes) -> list[list[str | int]]:
    """The places in the request body that an error answer names (may be none)."""
    try:
        data = jsoncodec.loads(error)
    except ValueError:
        return []
    if not isinstance(data, dict):
        return []
    places: list[list[str | int]] = []
    detail = data.get("detail")
    if isinstance(detail, list):
        for item in detail:
            if isinstance(item, dict) and isinstance(item.get("loc"), list):
                places.append(_loc_parts(item["loc"]))
    inner = data.get("error") if isinstance(data.get("error"), dict) else data
    assert isinstance(inner, dict)
    param = inner.get("param")
    if isinstance(param, str) and param:
        places.append(_parts(param))
    message = inner.get("message")
    if isinstance(message, str):
        for found in _LOC.finditer(message):  # a pydantic error list printed as text
            items: list[Any] = []
            for single, double, number in _LOC_ITEM.findall(found.group(1)):
                items.append(int(number) if number else single or double)
            places.append(_loc_parts(items))
        first = _MESSAGE_PATH.match(message)
        if first is not None:
            places.append(_parts(first.group(1)))
    return [p for p in places if p]


def _at(body: object, parts: list[str | int]) -> object:
    node = body
    for part in parts:
        if isinstance(node, dict) and isinstance(part, str):
            node = node.get(part, _MISSING)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            return _MISSING
        if node is _MISSING:
            return _MISSING
    return node


def app_is_at_fault(error: bytes, original: bytes, sent: bytes) -> bool:
    """True when the refusal names only places the app's body and the sent body share."""
    places = named_places(error)
    if not places:
        return False
    try:
        mine, theirs = jsoncodec.loads(sent), jsoncodec.loads(original)
    except ValueError:
        return False
    return all(_same_at(mine, theirs, p) for p in places)


def _same_at(a: object, b: object, parts: list[str | int]) -> bool:
    """Both bodies agree at the deepest part of ``parts`` that either of them has.

    ``max_tokens`` missing from both: the same. ``system.0.cache_control.ttl`` where the
    sidecar added ``system[0]``: not the same, though ``ttl`` is missing from both.
    """
    for k in range(len(parts), 0, -1):
        x, y = _at(a, parts[:k]), _at(b, parts[:k])
        if x is not _MISSING or y is not _MISSING:
            return x == y
    return True


def names_include_usage(error: bytes) -> bool:
    """The refusal mentions the field the sidecar adds to streamed chat calls."""
    return b"stream_options" in error or b"include_usage" in error


class RefusedAdditions:
    """Per upstream, the sidecar's additions it refused lately (bounded, forgetting)."""

    __slots__ = ("_forget_after", "_limit", "_refused")

    def __init__(self, *, limit: int = 64, forget_after: float = 3600.0) -> None:
        self._refused: OrderedDict[tuple[str, Addition], float] = OrderedDict()
        self._limit = limit
        self._forget_after = forget_after

    def refused(self, upstream: str, addition: Addition) -> bool:
        if not self._refused:  # the common case: nothing was ever refused
            return False
        key = (upstream, addition)
        since = self._refused.get(key)
        if since is None:
            return False
        if time.monotonic() - since > self._forget_after:
            del self._refused[key]
            return False
        return True

    def remember(self, upstream: str, addition: Addition) -> None:
        key = (upstream, addition)
        self._refused[key] = time.monotonic()
        self._refused.move_to_end(key)
        while len(self._refused) > self._limit:
            self._refused.popitem(last=False)
