"""Bad context configuration makes the policy invalid at check time, with the reason."""

from __future__ import annotations

from typing import Any

import pytest

from promptcache.policy import PolicyError, parse_policy
from promptcache.policy.schema import DEFAULT_CONTEXT_PLACEHOLDER
from promptcache.sidecar import context as sidecar_context


def _spec(source: dict[str, Any], variables: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "contextSources": [{"name": "orders", **source}],
        "contextVariables": variables or [{"name": "user_id"}],
    }


def test_a_good_policy_parses_with_defaults() -> None:
    spec = parse_policy(
        _spec(
            {
                "url": "https://orders.internal:8443/users/{user_id}/orders?limit=5",
                "headers": {"Authorization": "Bearer static", "X-User": "{user_id}"},
                "cacheFor": "30s",
                "maxBytes": 4096,
                "retries": 2,
                "timeout": "300ms",
            },
            [{"name": "user_id", "from": "field", "field": "metadata.user_id"}],
        )
    )
    src = spec.context_sources[0]
    assert (src.method, src.required, src.placeholder) == (
        "GET",
        False,
        DEFAULT_CONTEXT_PLACEHOLDER,
    )
    assert spec.context_variables[0].from_ == "field"
    assert spec.context_deadline == "2s"


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ({"url": "http://h/{customer}"}, "unknown variable {customer}"),
        ({"url": "http://h/x", "headers": {"X-C": "{customer}"}}, "unknown variable {customer}"),
        ({"url": "http://{user_id}.internal/x"}, "the host must be literal"),
        ({"url": "http://h:{user_id}/x"}, "the host must be literal"),
        ({"url": "http://h/{user_id"}, "bad template"),
        ({"url": "http://h/{0}"}, "bad placeholder {0}"),
        ({"url": "http://h/{user_id!r}"}, "bad placeholder"),
        ({"url": "http://h/{user_id:>5}"}, "bad placeholder"),
        ({"url": "http://h/a b"}, "whitespace"),
        ({"url": "http://h:99999/x"}, "Port out of range"),
        ({"url": "ftp://h/x"}, "url"),
        ({"url": "http:///x"}, "the host must be literal"),
        ({"url": "http://h/x", "headers": {"Bad Name": "v"}}, "bad header name"),
        ({"url": "http://h/x", "headers": {"X-A": "a\r\nB: c"}}, "CR, LF or NUL"),
        ({"url": "http://h/x", "timeout": "0s"}, "timeout must be > 0"),
        ({"url": "http://h/x", "timeout": "soon"}, "timeout"),
        ({"url": "http://h/x", "retries": 9}, "retries"),
        ({"url": "http://h/x", "body": {"q": "x"}}, "body needs method: POST"),
        ({"url": "http://h/x", "method": "POST", "body": {"q": "{nope}"}}, "unknown variable"),
        ({"url": "http://h/x", "method": "POST", "body": {"q": ["{user_id"]}}, "bad template"),
    ],
)
def test_bad_configuration_is_refused_with_the_reason(source: dict[str, Any], reason: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(_spec(source))
    assert reason in str(info.value)
    assert "contextSources" in str(info.value)


def test_source_names_must_be_unique() -> None:
    with pytest.raises(PolicyError, match="names must be unique"):
        parse_policy(
            {
                "contextSources": [
                    {"name": "a", "url": "http://h/1"},
                    {"name": "a", "url": "http://h/2"},
                ]
            }
        )


def test_field_variable_needs_a_field() -> None:
    with pytest.raises(PolicyError, match="from: field needs field"):
        parse_policy({"contextVariables": [{"name": "u", "from": "field"}]})


def test_public_api_is_what_all_says() -> None:
    for name in sidecar_context.__all__:
        assert hasattr(sidecar_context, name), name
    assert {"ContextFetcher", "ContextMetrics", "RequiredSourceError"} <= set(
        sidecar_context.__all__
    )


def test_post_body_and_message_variable_parse() -> None:
    spec = parse_policy(
        {
            "contextSources": [
                {
                    "name": "docs",
                    "method": "POST",
                    "url": "http://retriever.internal/search",
                    "body": {"query": "{question}", "filters": {"user": "{user_id}"}, "k": 3},
                }
            ],
            "contextVariables": [
                {"name": "question", "from": "message"},
                {"name": "user_id", "from": "field", "field": "metadata.user_id"},
            ],
        }
    )
    assert spec.context_sources[0].body == {
        "query": "{question}",
        "filters": {"user": "{user_id}"},
        "k": 3,
    }
    assert spec.context_variables[0].from_ == "message"
