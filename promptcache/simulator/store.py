"""A bounded prefix-cache store: hash of a prompt prefix -> a live cache entry.

Both dialects keep their caches here. Entries expire lazily on lookup (a TTL after their
last use, and optionally a hard lifetime), and the store holds at most ``max_entries``,
dropping the least recently used, so a long demo cannot grow the simulator's memory
without bound. Keys are the 32-byte digests the dialect modules compute once per block.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(slots=True)
class Entry:
    """One cached prefix."""

    tokens: int
    """Tokens of the whole prefix this entry covers."""
    ttl_s: float
    """Idle lifetime: each use moves ``expires_at`` to now + ttl."""
    expires_at: float
    dies_at: float | None = None
    """Hard end of life regardless of use (OpenAI ``in_memory``); None: none."""


class CacheStore:
    """LRU map of prefix digest -> ``Entry`` with lazy expiry."""

    def __init__(self, *, max_entries: int) -> None:
        self._entries: OrderedDict[bytes, Entry] = OrderedDict()
        self._max = max(1, max_entries)
        self.evicted = 0
        """Entries dropped because the store was full."""

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes, *, now: float) -> Entry | None:
        """The live entry for ``key`` (expired ones are dropped), without refreshing it."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires_at <= now or (entry.dies_at is not None and entry.dies_at <= now):
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry

    def touch(self, key: bytes, *, now: float, ttl_s: float | None = None) -> None:
        """Refresh a live entry's TTL (a hit), upgrading it to ``ttl_s`` if longer."""
        entry = self._entries.get(key)
        if entry is None:
            return
        if ttl_s is not None and ttl_s > entry.ttl_s:
            entry.ttl_s = ttl_s
        entry.expires_at = now + entry.ttl_s

    def put(
        self, key: bytes, *, tokens: int, ttl_s: float, now: float, lifetime_s: float | None = None
    ) -> None:
        """Create (or renew) an entry; a live entry keeps its longer TTL and its hard end."""
        entry = self.get(key, now=now)
        dies_at = now + lifetime_s if lifetime_s is not None else None
        if entry is not None:
            ttl_s = max(ttl_s, entry.ttl_s)
            dies_at = entry.dies_at if entry.dies_at is not None else dies_at
        self._entries[key] = Entry(
            tokens=tokens, ttl_s=ttl_s, expires_at=now + ttl_s, dies_at=dies_at
        )
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
            self.evicted += 1

    def clear(self) -> None:
        self._entries.clear()
        self.evicted = 0
