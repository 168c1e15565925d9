"""A small bounded mapping: the planner's per-process state must not grow without limit.

Keys are prefix fingerprints and policy names; an app that sends a new prefix on every
request (a timestamp at the top) would otherwise leak one entry per request.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Lru(Generic[K, V]):
    """Least-recently-used mapping holding at most ``capacity`` entries."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._data: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.capacity:
            self._data.popitem(last=False)

    def peek(self, key: K) -> V | None:
        """The value without making it most recently used."""
        return self._data.get(key)

    def items(self) -> list[tuple[K, V]]:
        return list(self._data.items())

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data


class TextMemo(Generic[V]):
    """A bounded memo keyed by a (long) text, looked up without hashing all of it.

    A dict keyed by the text would hash every character of a freshly parsed 28 KB
    system prompt on each request (~7 us here); this keys by the length and both ends
    and confirms a hit by comparing the texts (a memcmp, ~0.5 us). Texts that share
    length and ends replace each other, which costs a recomputation, never a wrong
    value. Least recently used entries go first, as in ``Lru``.
    """

    EDGE = 64
    """Characters taken from each end of the text for the key."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._data: dict[tuple[int, str, str], tuple[str, V]] = {}

    @classmethod
    def _key(cls, text: str) -> tuple[int, str, str]:
        return len(text), text[: cls.EDGE], text[-cls.EDGE :]

    def get(self, text: str) -> V | None:
        data, key = self._data, self._key(text)
        hit = data.get(key)
        if hit is not None and hit[0] == text:
            data[key] = data.pop(key)  # most recently used last
            return hit[1]
        return None

    def put(self, text: str, value: V) -> None:
        data, key = self._data, self._key(text)
        if key not in data and len(data) >= self.capacity:
            del data[next(iter(data))]  # the least recently used
        data[key] = (text, value)

    def __len__(self) -> int:
        return len(self._data)
