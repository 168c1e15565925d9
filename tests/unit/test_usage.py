"""``promptcache.usage.total``: the demo's arm totals and the tests' sums rely on it."""

from __future__ import annotations

from promptcache.usage import Usage, total


def test_total_adds_each_kind_and_is_zero_for_none() -> None:
    a = Usage(uncached=1, cache_read=20, cache_write_5m=300, cache_write_1h=4_000, output=5)
    b = Usage(uncached=10, cache_read=2, cache_write_5m=3, output=50)
    assert total(iter([a, b])) == Usage(
        uncached=11, cache_read=22, cache_write_5m=303, cache_write_1h=4_000, output=55
    )
    assert total([]) == Usage()
    assert total([a, b]).hit_ratio == 22 / (11 + 22 + 303 + 4_000)
