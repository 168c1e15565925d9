"""Memoised context results (a source's ``cacheFor``): a bounded, expiring LRU.

A memo entry saves a round trip for context that changes slowly (a user's profile,
a policy document). Keys are what was actually sent - policy, source, method, the
rendered URL, headers and body - so two users never share an entry. Only successes are
stored: a failure must be retried by the next request, not replayed. Both the number
of entries and their total size are bounded, so a stream of distinct users cannot
grow the sidecar's memory without limit.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

DEFAULT_MAX_ENTRIES = 1024
"""Entries kept at most; the least recently used goes first."""
DEFAULT_MAX_BYTES = 32 * 1024 * 1024
"""Total UTF-8 size of the kept texts at most (bytes)."""


@dataclass(frozen=True, slots=True)
class MemoKey:
    """What identifies one fetched result."""

    policy: str
    source: str
    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""

    @classmethod
    def of(
        cls,
        *,
        policy: str,
        source: str,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes = b"",
    ) -> MemoKey:
        return cls(policy, source, method, url, tuple(sorted(headers.items())), body)


@dataclass(frozen=True, slots=True)
class _Entry:
    text: str
    size: int
    expires: float


class Memo:
    """An LRU of fetched texts, each valid until its own expiry."""

    def __init__(
        self,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._entries: OrderedDict[MemoKey, _Entry] = OrderedDict()
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._bytes = 0
        self._clock = clock

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def get(self, key: MemoKey) -> str | None:
        """The text stored for ``key`` if it has not expired."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires <= self._clock():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry.text

    def put(self, key: MemoKey, text: str, *, ttl: float) -> None:
        """Keep ``text`` for ``ttl`` seconds (not at all when ``ttl`` <= 0 or it is too big)."""
        size = len(text.encode("utf-8"))
        if ttl <= 0 or size > self._max_bytes:
            return
        if key in self._entries:
            self._drop(key)
        self._entries[key] = _Entry(text, size, self._clock() + ttl)
        self._bytes += size
        while len(self._entries) > self._max_entries or self._bytes > self._max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: MemoKey) -> None:
        entry = self._entries.pop(key)
        self._bytes -= entry.size
