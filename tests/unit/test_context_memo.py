"""The cacheFor memo: expiry, LRU order and both bounds."""

from __future__ import annotations

from promptcache.sidecar.context import Memo, MemoKey


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _key(url: str, **headers: str) -> MemoKey:
    return MemoKey.of(policy="p", source="s", method="GET", url=url, headers=headers)


def test_entries_expire() -> None:
    clock = _Clock()
    memo = Memo(clock=clock)
    memo.put(_key("u"), "text", ttl=5)
    assert memo.get(_key("u")) == "text"
    clock.now += 5
    assert memo.get(_key("u")) is None
    assert len(memo) == 0
    assert memo.size_bytes == 0


def test_key_covers_headers_and_their_order_does_not_matter() -> None:
    memo = Memo()
    memo.put(_key("u", a="1", b="2"), "x", ttl=60)
    assert (
        memo.get(
            MemoKey.of(policy="p", source="s", method="GET", url="u", headers={"b": "2", "a": "1"})
        )
        == "x"
    )
    assert memo.get(_key("u", a="1", b="3")) is None
    assert memo.get(_key("u")) is None


def test_least_recently_used_goes_first() -> None:
    memo = Memo(max_entries=2)
    memo.put(_key("a"), "A", ttl=60)
    memo.put(_key("b"), "B", ttl=60)
    assert memo.get(_key("a")) == "A"
    memo.put(_key("c"), "C", ttl=60)
    assert memo.get(_key("b")) is None
    assert memo.get(_key("a")) == "A"
    assert memo.get(_key("c")) == "C"


def test_total_size_is_bounded() -> None:
    memo = Memo(max_bytes=10)
    memo.put(_key("a"), "aaaa", ttl=60)
    memo.put(_key("b"), "bbbb", ttl=60)
    memo.put(_key("c"), "cccc", ttl=60)
    assert memo.size_bytes <= 10
    assert memo.get(_key("a")) is None
    memo.put(_key("big"), "x" * 11, ttl=60)
    assert memo.get(_key("big")) is None
    assert memo.size_bytes == 8


def test_replacing_an_entry_keeps_the_size_right() -> None:
    memo = Memo()
    memo.put(_key("a"), "1234", ttl=60)
    memo.put(_key("a"), "12", ttl=60)
    assert memo.size_bytes == 2
    assert len(memo) == 1


def test_zero_ttl_stores_nothing() -> None:
    memo = Memo()
    memo.put(_key("a"), "x", ttl=0)
    assert len(memo) == 0
