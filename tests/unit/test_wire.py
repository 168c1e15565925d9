"""The wire vocabulary's mappings, and that the policy schema and planner use its names."""

from __future__ import annotations

import typing

import pytest

from promptcache import wire
from promptcache.policy import StaticBlock
from promptcache.policy.schema import PolicySpec
from promptcache.sidecar import planner
from promptcache.sidecar.planner import PlanRequest


@pytest.mark.parametrize(
    ("route", "configured", "provider", "family"),
    [
        ("messages", None, "anthropic", "anthropic"),
        ("messages", "openai-compatible", "anthropic", "anthropic"),
        ("chat", None, "openai", "openai"),
        ("chat", "anthropic", "openai", "openai"),
        ("chat", "openai-compatible", "openai-compatible", "openai"),
        ("responses", "openai-compatible", "openai-compatible", "openai"),
    ],
)
def test_route_maps_to_provider_and_family(
    route: wire.Route, configured: wire.Provider | None, provider: str, family: str
) -> None:
    assert wire.provider_of(route, configured) == provider
    assert wire.family_of_route(route) == family
    spec = PolicySpec(provider=configured) if configured else None
    assert PlanRequest(route=route, body={}, policy=spec).provider == provider


def test_every_proxied_path_has_a_route() -> None:
    assert set(wire.ROUTES.values()) == set(typing.get_args(wire.Route))


def test_unproxied_paths_pick_an_upstream() -> None:
    assert wire.family_of_path("/v1/messages/count_tokens", {}) == "anthropic"
    assert wire.family_of_path("/v1/complete", {}) == "anthropic"
    assert wire.family_of_path("/v1/models", {"anthropic-version": "2023-06-01"}) == "anthropic"
    assert wire.family_of_path("/v1/models", {}) == "openai"
    assert wire.is_openai_compatible("openai-compatible")
    assert not wire.is_openai_compatible("openai")


def test_one_definition_of_each_name() -> None:
    assert planner.Ttl is wire.Ttl
    assert planner.Route is wire.Route
    # The policy may ask for ``auto``; the wire lifetime never carries it.
    assert set(typing.get_args(wire.PolicyTtl)) == {"5m", "1h", "auto"}
    assert StaticBlock(name="a", content="x", ttl="auto").ttl == "auto"
    assert "auto" not in typing.get_args(wire.Ttl)
