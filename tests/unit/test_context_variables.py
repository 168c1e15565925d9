"""Context variables: where values come from and how they are filled into templates."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from promptcache.policy import ContextVariable
from promptcache.sidecar.context import SourceError
from promptcache.sidecar.context.variables import (
    field_value,
    newest_user_text,
    render_body,
    render_headers,
    render_url,
    resolve_variables,
)


def _var(**kw: object) -> ContextVariable:
    return ContextVariable.model_validate(kw)


def test_header_variable_default_name_is_case_insensitive() -> None:
    headers = CIMultiDictProxy(CIMultiDict({"X-PromptCache-User-Id": "u-1"}))
    found = resolve_variables([_var(name="user_id")], headers=headers, body=None)
    assert found == {"user_id": "u-1"}


def test_plain_dict_headers_are_matched_case_insensitively_too() -> None:
    found = resolve_variables(
        [_var(name="tenant", header="X-Tenant")], headers={"x-tenant": "acme"}, body=None
    )
    assert found == {"tenant": "acme"}


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        ("metadata.user_id", {"metadata": {"user_id": "anthropic-user"}}, "anthropic-user"),
        ("user", {"user": "openai-user"}, "openai-user"),
        ("metadata.tier", {"metadata": {"tier": "gold"}}, "gold"),
        ("metadata.n", {"metadata": {"n": 42}}, "42"),
        ("flag", {"flag": True}, "true"),
        ("items.1", {"items": ["a", "b"]}, "b"),
        ("items.5", {"items": ["a"]}, None),
        ("metadata", {"metadata": {"a": 1}}, None),
        ("user", {"user": ""}, None),
        ("user", {"user": None}, None),
        ("metadata.user_id", {"metadata": "x"}, None),
        ("user", None, None),
    ],
)
def test_field_value(path: str, body: object, expected: str | None) -> None:
    assert field_value(body, path) == expected


def test_missing_and_empty_variables_are_left_out() -> None:
    variables = [
        _var(name="a"),
        _var(name="b", **{"from": "field", "field": "user"}),
        _var(name="c"),
    ]
    found = resolve_variables(variables, headers={"x-promptcache-c": ""}, body={"user": "u"})
    assert found == {"b": "u"}


def test_url_placeholders_are_percent_encoded_as_one_segment() -> None:
    url = render_url("http://h:1/users/{u}/orders?q={q}", {"u": "a/b c", "q": "x&y=z+1"})
    assert url == "http://h:1/users/a%2Fb%20c/orders?q=x%26y%3Dz%2B1"


@pytest.mark.parametrize("value", [".", ".."])
def test_dot_segments_cannot_climb_the_path(value: str) -> None:
    url = URL(render_url("http://h/users/{u}/profile", {"u": value}), encoded=True)
    assert url.raw_path == "/users/" + "%2E" * len(value) + "/profile"


def test_url_literal_text_is_kept_and_non_ascii_encoded() -> None:
    assert render_url("http://h/ä/{u}?a=1&b={{x}}", {"u": "ü"}) == (
        "http://h/%C3%A4/%C3%BC?a=1&b=%7Bx%7D"
    )


def test_missing_variable_fails_with_that_reason() -> None:
    with pytest.raises(SourceError) as info:
        render_url("http://h/{u}", {})
    assert info.value.reason == "missing_variable"


def test_header_templates_are_filled_raw() -> None:
    out = render_headers({"Authorization": "Bearer {t}", "X-Q": "a b/c"}, {"t": "tok/en="})
    assert out == {"Authorization": "Bearer tok/en=", "X-Q": "a b/c"}


@pytest.mark.parametrize("bad", ["a\r\nInjected: 1", "a\nb", "a\0b"])
def test_header_values_refuse_cr_lf_nul(bad: str) -> None:
    with pytest.raises(SourceError) as info:
        render_headers({"X-U": "{u}"}, {"u": bad})
    assert info.value.reason == "bad_variable"
    assert bad not in str(info.value)


@given(st.text(min_size=1))
def test_any_value_stays_inside_its_path_segment(value: str) -> None:
    rendered = render_url("http://h/users/{u}/profile?k=1", {"u": value})
    url = URL(rendered, encoded=True)
    assert url.host == "h"
    assert url.raw_path.startswith("/users/")
    assert url.raw_path.endswith("/profile")
    assert url.raw_path.count("/") == 3
    assert url.raw_query_string == "k=1"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # Anthropic Messages: string content, and text blocks around an image.
        ({"messages": [{"role": "user", "content": "Where is my parcel?"}]}, "Where is my parcel?"),
        (
            {
                "messages": [
                    {"role": "user", "content": "old question"},
                    {"role": "assistant", "content": "old answer"},
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "Refund?"},
                            {"type": "image", "source": {"type": "base64", "data": "AAAA"}},
                            {"type": "text", "text": "Order 12."},
                        ],
                    },
                ]
            },
            "Refund?\n\nOrder 12.",
        ),
        # A tool result is not what the user asked: the newest user text is used.
        (
            {
                "messages": [
                    {"role": "user", "content": "What's the weather?"},
                    {
                        "role": "assistant",
                        "content": [{"type": "tool_use", "id": "t", "name": "w", "input": {}}],
                    },
                    {
                        "role": "user",
                        "content": [
                            {"type": "tool_result", "tool_use_id": "t", "content": "sunny"}
                        ],
                    },
                ]
            },
            "What's the weather?",
        ),
        # OpenAI Chat Completions and Responses.
        (
            {
                "messages": [
                    {"role": "system", "content": "s"},
                    {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
                ]
            },
            "Hi",
        ),
        ({"input": "Plain input"}, "Plain input"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_text", "text": "Typed"}]}]},
            "Typed",
        ),
        ({"messages": [{"role": "assistant", "content": "only me"}]}, None),
        ({"messages": [{"role": "user", "content": "   "}]}, None),
        ("not a body", None),
    ],
)
def test_newest_user_text(body: object, expected: str | None) -> None:
    assert newest_user_text(body) == expected


def test_message_variable_is_cut_to_its_limit() -> None:
    body = {"messages": [{"role": "user", "content": "x" * 10_000}]}
    found = resolve_variables([_var(name="q", **{"from": "message"})], headers={}, body=body)
    assert found == {"q": "x" * 4096}


def test_body_placeholders_fill_json_strings_only() -> None:
    template = {"query": "about: {q}", "k": 3, "tags": ["{q}", True, None], "nested": {"u": "{u}"}}
    value = 'a "quoted"\nline}, "k": 99, "x": {'
    body = render_body(template, {"q": value, "u": "u-1"})
    assert json.loads(body) == {
        "query": f"about: {value}",
        "k": 3,
        "tags": [value, True, None],
        "nested": {"u": "u-1"},
    }
    assert body.isascii()


def test_body_with_a_missing_variable_fails_the_source() -> None:
    with pytest.raises(SourceError) as info:
        render_body({"q": "{q}"}, {})
    assert info.value.reason == "missing_variable"
