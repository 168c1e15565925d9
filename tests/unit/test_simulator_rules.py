"""The simulator's pure parts: the store, fault parsing, the answer text, prefix hashing,
and properties of the Anthropic cache lookup over generated conversations.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from promptcache.simulator import CacheConfig, FaultRule, OutputConfig, parse_fault_rule
from promptcache.simulator.anthropic_cache import AnthropicCache, parse_request
from promptcache.simulator.errors import ApiError
from promptcache.simulator.faults import Faults
from promptcache.simulator.openai_cache import parse_request as parse_openai
from promptcache.simulator.store import CacheStore
from promptcache.simulator.textgen import answer


def test_store_expires_refreshes_and_stays_bounded() -> None:
    store = CacheStore(max_entries=2)
    store.put(b"a", tokens=10, ttl_s=300, now=0)
    assert store.get(b"a", now=299) is not None
    store.touch(b"a", now=299)
    assert store.get(b"a", now=598) is not None
    assert store.get(b"a", now=599) is None
    store.put(b"b", tokens=1, ttl_s=3600, now=0)
    store.put(b"b", tokens=1, ttl_s=300, now=10)  # a renewal keeps the longer TTL
    entry = store.get(b"b", now=20)
    assert entry is not None
    assert entry.ttl_s == 3600
    store.put(b"c", tokens=1, ttl_s=300, now=20)
    store.put(b"d", tokens=1, ttl_s=300, now=20)
    assert len(store) == 2
    assert store.evicted == 1
    assert store.get(b"b", now=21) is None  # least recently used went first
    store.put(b"e", tokens=1, ttl_s=600, now=0, lifetime_s=3600)
    store.touch(b"e", now=3500)
    assert store.get(b"e", now=3599) is not None
    assert store.get(b"e", now=3600) is None


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("429", FaultRule("429", 1.0, None)),
        ("529:0.25", FaultRule("529", 0.25, None)),
        ("slow-headers=2:0.1", FaultRule("slow-headers", 0.1, 2.0)),
        ("429=0.5", FaultRule("429", 1.0, 0.5)),
        ("reset-during:0", FaultRule("reset-during", 0.0, None)),
    ],
)
def test_fault_rules_parse(text: str, rule: FaultRule) -> None:
    assert parse_fault_rule(text) == rule


@pytest.mark.parametrize("text", ["418", "429:2", "429:-1", "slow-headers=-3", "429:x"])
def test_bad_fault_rules_are_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        parse_fault_rule(text)


def test_fault_header_counts_per_key() -> None:
    faults = Faults((), seed=0)
    headers = {"x-sim-fault": "500", "x-sim-fault-count": "2", "x-sim-fault-key": "k"}
    decided = [faults.decide(headers) for _ in range(4)]
    assert [d.kind if d else None for d in decided] == ["500", "500", None, None]
    other = faults.decide(headers | {"x-sim-fault-key": "j"})
    assert other is not None
    slow = faults.decide({"x-sim-fault": "slow-headers:1.5"})
    assert slow is not None
    assert slow.arg == 1.5
    assert faults.decide({"x-sim-fault": "none"}) is None
    with pytest.raises(ApiError):
        faults.decide({"x-sim-fault": "500", "x-sim-fault-count": "many"})


def test_answers_are_deterministic_and_bounded() -> None:
    config = OutputConfig(min_tokens=150, max_tokens=300)
    one = answer(seed=1, digest=b"x" * 32, limit=None, config=config)
    assert one == answer(seed=1, digest=b"x" * 32, limit=None, config=config)
    assert one != answer(seed=2, digest=b"x" * 32, limit=None, config=config)
    assert 150 <= len(one.pieces) <= 300
    assert not one.truncated
    cut = answer(seed=1, digest=b"x" * 32, limit=10, config=config)
    assert len(cut.pieces) == 10
    assert cut.truncated
    assert one.text.startswith(cut.text)
    assert answer(seed=1, digest=b"x" * 32, limit=0, config=config).text == ""


def anthropic_body(system: Any, messages: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-6",
        "max_tokens": 5,
        "system": system,
        "messages": messages,
        **extra,
    }


def test_prefix_hash_ignores_markers_and_string_shorthand() -> None:
    plain = parse_request(anthropic_body("S" * 400, [{"role": "user", "content": "hello"}]))
    blocks = parse_request(
        anthropic_body(
            [
                {
                    "type": "text",
                    "text": "S" * 400,
                    "cache_control": {"type": "ephemeral", "ttl": "1h"},
                }
            ],
            [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "text",
                            "text": "hello",
                            "cache_control": {"type": "ephemeral"},
                        }
                    ],
                }
            ],
        )
    )
    assert plain.hashes == blocks.hashes
    assert plain.cum_tokens == blocks.cum_tokens == (100, 102)
    assert [(bp.position, bp.ttl) for bp in blocks.breakpoints] == [(0, "1h"), (1, "5m")]
    other_role = parse_request(
        anthropic_body("S" * 400, [{"role": "assistant", "content": "hello"}])
    )
    assert other_role.hashes[0] == plain.hashes[0]
    assert other_role.hashes[1] != plain.hashes[1]
    other_model = parse_request(
        anthropic_body("S" * 400, [{"role": "user", "content": "hello"}], model="claude-opus-4-7")
    )
    assert other_model.hashes[0] != plain.hashes[0]


def test_openai_chunk_hashes_share_the_common_prefix() -> None:
    config = CacheConfig()
    base = [{"role": "system", "content": "x" * 5000}, {"role": "user", "content": "a"}]
    longer = [*base, {"role": "assistant", "content": "y" * 3000}]
    one = parse_openai({"model": "gpt-4o", "messages": base}, api="chat", config=config)
    two = parse_openai({"model": "gpt-4o", "messages": longer}, api="chat", config=config)
    assert len(one.chunk_hashes) == (5000 + 10 + 9) // 512
    assert two.chunk_hashes[: len(one.chunk_hashes)] == one.chunk_hashes
    assert one.routing_hash == two.routing_hash
    keyed = parse_openai(
        {"model": "gpt-4o", "messages": base, "prompt_cache_key": "u1"}, api="chat", config=config
    )
    assert keyed.routing_hash != one.routing_hash
    assert keyed.chunk_hashes == one.chunk_hashes


turn_text = st.text(alphabet="abcdefgh ", min_size=1, max_size=2400)


@st.composite
def conversations(draw: st.DrawFn) -> tuple[list[str], list[int]]:
    """Message texts and up to 4 marked message indexes."""
    texts = draw(st.lists(turn_text, min_size=1, max_size=30))
    marked = draw(st.lists(st.integers(0, len(texts) - 1), max_size=4, unique=True))
    return texts, sorted(marked)


def build(texts: list[str], marked: list[int]) -> dict[str, Any]:
    messages = []
    for i, text in enumerate(texts):
        content: dict[str, Any] = {"type": "text", "text": text}
        if i in marked:
            content["cache_control"] = {"type": "ephemeral"}
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": [content]})
    return anthropic_body("persona " * 200, messages)


@settings(max_examples=150, deadline=None)
@given(first=conversations(), extra=st.lists(turn_text, max_size=25), remark=st.integers(0, 3))
def test_usage_always_adds_up_and_a_repeat_reads_what_was_written(
    first: tuple[list[str], list[int]], extra: list[str], remark: int
) -> None:
    cache = AnthropicCache(CacheConfig())
    texts, marked = first
    prompt = parse_request(build(texts, marked))
    written = cache.resolve(prompt, now=0)
    written.commit(0)
    assert written.cache_read == 0
    assert written.uncached + written.cache_write == prompt.total_tokens
    assert written.uncached >= 0

    repeat = cache.resolve(prompt, now=1)
    assert repeat.cache_read == written.cache_write  # exactly what the first request stored
    assert repeat.cache_write == 0

    # A grown conversation: read is a prefix length, parts add up, never more than written.
    grown_texts = texts + extra
    marks = sorted({*marked, len(grown_texts) - 1 - min(remark, len(grown_texts) - 1)})[-4:]
    grown = parse_request(build(grown_texts, marks))
    outcome = cache.resolve(grown, now=2)
    assert outcome.uncached >= 0
    assert outcome.cache_read + outcome.cache_write + outcome.uncached == grown.total_tokens
    assert outcome.cache_read == 0 or outcome.cache_read in grown.cum_tokens
    assert outcome.cache_read <= written.cache_write


def test_public_names() -> None:
    from promptcache import simulator

    assert sorted(simulator.__all__) == sorted(
        [
            "SIMULATION",
            "CacheConfig",
            "FaultRule",
            "LatencyConfig",
            "ManualClock",
            "OutputConfig",
            "SimConfig",
            "SimServer",
            "create_app",
            "parse_fault_rule",
            "stats",
        ]
    )
    assert all(hasattr(simulator, name) for name in simulator.__all__)
