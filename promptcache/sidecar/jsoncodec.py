"""JSON on the hot path: orjson, with the standard library as the fallback.

Every proxied call parses the app's body (a case-study request is ~28 KB) and some are
serialised again (planned or ``include_usage`` added). On the benchmark's request
orjson parses in about half the time of ``json`` and serialises ~100x faster, which is
a large share of the sidecar's per-call budget. orjson refuses a few inputs the standard
library accepts (integers beyond 64 bits, ``NaN``); those fall back to ``json`` so
nothing the app could send is rejected here.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def loads(data: bytes) -> Any:
    """Parse JSON; ``ValueError`` (also for invalid UTF-8) when it is not JSON."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON; ``TypeError`` / ``ValueError`` when ``value`` is not JSON.

    orjson returns its whole working buffer (~256 KB for a 28 KB request); the bytes stay
    alive until the call ends (a fail-open resend may need them), so at 75 calls in
    flight those buffers added ~15 MB to the sidecar's peak RSS. A right-sized copy
    costs ~1 us.
    """
    try:
        data = orjson.dumps(value)
    except orjson.JSONEncodeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    return bytes(memoryview(data))
