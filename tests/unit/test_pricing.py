"""The model table and what a call costs, for the 2026 models (checked 2026-12-04).

GPT-5.6 and later bill cache writes at 1.25x uncached input (reported as
``cache_write_tokens``), older OpenAI models none; Anthropic 5m/1h writes at 1.25x/2x;
each model's minimum cacheable prefix comes from the providers' caching pages.
"""

from __future__ import annotations

import pytest

from promptcache.models import lookup
from promptcache.pricing import cost
from promptcache.usage import Usage, from_openai


@pytest.mark.parametrize(
    ("model", "minimum", "price", "write"),
    [
        ("gpt-5.6-terra", 1024, 2.50, 1.25),
        ("gpt-5.6-sol", 1024, 5.00, 1.25),
        ("gpt-5.6-luna", 1024, 1.00, 1.25),
        ("gpt-6.1-terra", 1024, 1.00, 1.25),
        ("gpt-5.5", 1024, 5.00, 1.0),
        ("gpt-4o-mini", 1024, 0.15, 1.0),
    ],
)
def test_openai_rows(model: str, minimum: int, price: float, write: float) -> None:
    info = lookup("openai", model)
    assert (info.min_cacheable_tokens, info.input_per_mtok) == (minimum, price)
    assert info.write_5m_multiplier == write
    assert info.explicit_breakpoints is (write > 1.0)


@pytest.mark.parametrize(
    ("model", "minimum", "price", "system_messages"),
    [
        ("claude-opus-5", 512, 5.00, True),
        ("claude-fable-5", 512, 10.00, True),
        ("claude-mythos-5", 512, 10.00, True),
        ("claude-opus-4-8", 1024, 5.00, True),
        ("claude-sonnet-5", 1024, 3.00, True),
        ("claude-opus-4-7", 2048, 5.00, False),
        ("claude-opus-4-6", 4096, 5.00, False),
        ("claude-sonnet-4-6", 1024, 3.00, False),
        ("claude-haiku-4-5-20251001", 4096, 1.00, False),
    ],
)
def test_anthropic_rows(model: str, minimum: int, price: float, system_messages: bool) -> None:
    info = lookup("anthropic", model)
    assert (info.min_cacheable_tokens, info.input_per_mtok) == (minimum, price)
    assert (info.write_5m_multiplier, info.write_1h_multiplier, info.read_multiplier) == (
        1.25,
        2.0,
        0.1,
    )
    assert info.mid_conversation_system is system_messages


def test_gpt_5_6_writes_cost_a_quarter_more_than_uncached_input() -> None:
    usage = from_openai(
        {
            "prompt_tokens": 10_000,
            "completion_tokens": 100,
            "prompt_tokens_details": {"cached_tokens": 6_000, "cache_write_tokens": 3_000},
        }
    )
    assert usage == Usage(uncached=1_000, cache_read=6_000, cache_write_5m=3_000, output=100)
    billed = cost(usage, lookup("openai", "gpt-5.6-terra"))
    per_token = 2.50e-6
    assert billed.input == pytest.approx(per_token * (1_000 + 6_000 * 0.1 + 3_000 * 1.25))
    assert billed.input_without_cache == pytest.approx(per_token * 10_000)


def test_responses_usage_with_writes() -> None:
    usage = from_openai(
        {
            "input_tokens": 5_000,
            "output_tokens": 10,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 4_000},
        }
    )
    assert (usage.uncached, usage.cache_write) == (1_000, 4_000)
