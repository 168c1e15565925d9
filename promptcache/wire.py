"""The wire vocabulary: which providers, wire shapes, routes and cache lifetimes exist.

These names are shared by the policy schema, the model table, the planner, the proxy and
the explain CLI; each is defined here once, together with the mappings between them
(a route's wire shape, the provider a route talks to, the wire shape of an unproxied
path), so that no two modules can disagree about them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal

Provider = Literal["anthropic", "openai", "openai-compatible"]
"""Who serves a call: pricing, minimum lengths and planning rules follow the provider."""

Family = Literal["anthropic", "openai"]
"""Which wire shape a call speaks (OpenAI-compatible servers speak ``openai``): error
bodies, stream events and usage fields follow the family."""

Route = Literal["messages", "chat", "responses"]
"""Anthropic ``/v1/messages``; OpenAI ``/v1/chat/completions``; OpenAI ``/v1/responses``."""

Ttl = Literal["5m", "1h"]
"""A cache lifetime as sent to the provider (``cache_control.ttl``)."""

PolicyTtl = Literal[Ttl, "auto"]
"""A cache lifetime as a policy may ask for it: a ``Ttl``, or ``auto`` (the planner
chooses one from observed reuse, so ``auto`` never reaches the wire)."""

ROUTES: Final[Mapping[str, Route]] = {
    "/v1/messages": "messages",
    "/v1/chat/completions": "chat",
    "/v1/responses": "responses",
}
"""The proxied paths; every other path is relayed untouched."""

_ANTHROPIC_PATHS = ("/v1/messages", "/v1/complete")


def family_of_route(route: Route) -> Family:
    """The wire shape a proxied route speaks."""
    return "anthropic" if route == "messages" else "openai"


def provider_of(route: Route, configured: Provider | None) -> Provider:
    """The provider a call on ``route`` talks to, given the policy's ``provider`` (if any).

    The route decides the family; within the OpenAI family only the policy can say the
    upstream is an OpenAI-compatible server rather than OpenAI itself.
    """
    if route == "messages":
        return "anthropic"
    return "openai-compatible" if configured == "openai-compatible" else "openai"


def family_of_path(path: str, headers: Mapping[str, str]) -> Family:
    """The upstream an unproxied request belongs to (``headers`` case-insensitive)."""
    if path.startswith(_ANTHROPIC_PATHS) or "anthropic-version" in headers:
        return "anthropic"
    return "openai"


def is_openai_compatible(provider: Provider) -> bool:
    """A third-party server speaking OpenAI's API: it may refuse fields it does not know,
    and it has no OpenAI-only fields (``prompt_cache_key``, ``prompt_cache_retention``)."""
    return provider == "openai-compatible"


__all__ = [
    "ROUTES",
    "Family",
    "PolicyTtl",
    "Provider",
    "Route",
    "Ttl",
    "family_of_path",
    "family_of_route",
    "is_openai_compatible",
    "provider_of",
]
