"""Cost of a call in USD, as billed and as it would have been without caching.

Anthropic bills cache writes at 1.25x (5m) or 2x (1h) of base input and reads at 0.1x;
OpenAI bills cached input at a per-model discount. "Without caching" prices every input
token at the base rate, which is what the app paid before promptcache.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

from promptcache.models import ModelInfo, lookup
from promptcache.policy.schema import PricingOverride
from promptcache.usage import Usage
from promptcache.wire import Provider

_PER_TOKEN = 1e-6


@dataclass(frozen=True, slots=True)
class Cost:
    """Input and output cost of one call, USD."""

    input: float
    output: float
    input_without_cache: float

    @property
    def total(self) -> float:
        return self.input + self.output

    @property
    def total_without_cache(self) -> float:
        return self.input_without_cache + self.output

    @property
    def saved(self) -> float:
        return self.input_without_cache - self.input


_MODEL_KEY_MAX = 256
"""Longer model names (the app's, unchecked) are priced without being memoised."""


def model_info(
    provider: Provider, model: str | None, override: PricingOverride | None
) -> ModelInfo:
    """The table entry for ``model`` with a policy's price override applied.

    Memoised (bounded): the planner and the metrics ask on every request, and the
    answer depends only on the arguments (the override is a frozen model).
    """
    if model is not None and len(model) > _MODEL_KEY_MAX:
        return _model_info(provider, model, override)
    return _memoised_model_info(provider, model, override)


def _model_info(
    provider: Provider, model: str | None, override: PricingOverride | None
) -> ModelInfo:
    info = lookup(provider, model)
    if override is None:
        return info
    changes = {k: v for k, v in override.model_dump().items() if v is not None}
    return replace(info, **changes)


_memoised_model_info = functools.lru_cache(maxsize=512)(_model_info)


def cost(usage: Usage, info: ModelInfo) -> Cost:
    """Price ``usage`` with ``info``'s rates."""
    base = info.input_per_mtok * _PER_TOKEN
    spent = base * (
        usage.uncached
        + usage.cache_read * info.read_multiplier
        + usage.cache_write_5m * info.write_5m_multiplier
        + usage.cache_write_1h * info.write_1h_multiplier
    )
    return Cost(
        input=spent,
        output=usage.output * info.output_per_mtok * _PER_TOKEN,
        input_without_cache=base * usage.total_input,
    )
