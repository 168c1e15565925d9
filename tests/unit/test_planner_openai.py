"""Table tests for the OpenAI (Chat Completions, Responses) and OpenAI-compatible rewrite."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from promptcache.policy import PolicySpec, parse_policy
from promptcache.sidecar.planner import ContextBlock, Plan, Planner, PlanRequest, Route

STATIC = "Static instructions for the support agent. " * 120  # ~1,300 tokens
STAMP = "2025-05-01T10:00:00Z"
LEGACY_SYSTEM = f"Current date and time: {STAMP}\n\n{STATIC}\n\n<customer>Jane</customer>"
CONTEXT = (
    f'<context name="system">\nCurrent date and time: {STAMP}\n\n<customer>Jane</customer>\n'
    "</context>"
)


def policy(provider: str = "openai", **spec: Any) -> PolicySpec:
    block = {"name": "core", "mode": "match", "match": {"role": "system", "exact": STATIC}}
    base: dict[str, Any] = {
        "provider": provider,
        "staticBlocks": [block],
        "volatile": {"action": "relocate", "unmatchedSystem": "relocate"},
    }
    return parse_policy({**base, **spec})


def plan(
    route: Route,
    b: dict[str, Any],
    spec: PolicySpec | None,
    *,
    context: tuple[ContextBlock, ...] = (),
) -> Plan:
    before = copy.deepcopy(b)
    p = Planner(learning=False).plan(
        PlanRequest(route=route, body=b, policy_name="support", policy=spec, context=context)
    )
    assert b == before, "the planner mutated its input"
    return p


def chat(system: Any = LEGACY_SYSTEM, **extra: Any) -> dict[str, Any]:
    return {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": "Where is my order?"},
            {"role": "assistant", "content": "Let me check."},
            {"role": "user", "content": "Thanks."},
        ],
        **extra,
    }


def test_keep_in_place_leaves_the_customer_in_the_system_message() -> None:
    keep = {"name": "customer", "regex": "<customer>.*?</customer>"}
    spec = policy(
        volatile={"action": "relocate", "unmatchedSystem": "relocate", "keepInPlace": [keep]}
    )
    p = plan("chat", chat(), spec)
    msgs = p.body["messages"]
    assert msgs[0]["role"] == "system"
    system = msgs[0]["content"]
    text = system if isinstance(system, str) else "".join(part["text"] for part in system)
    assert text.startswith(STATIC)
    assert text.endswith("<customer>Jane</customer>")
    assert STAMP not in text
    assert p.context_text is not None
    assert "<customer>" not in p.context_text
    assert STAMP in p.context_text
    again = plan("chat", p.body, spec)
    assert not again.changed


def test_no_policy_changes_nothing_but_measures() -> None:
    b = chat(system=STATIC)
    p = plan("chat", b, None)
    assert p.body is b
    assert not p.changed
    assert p.static_tokens == 1290
    # The previous turn's prompt (1,290 system + 6 first question = 1,296 tokens) is the
    # stable prefix, counted in OpenAI's 128-token steps past the 1,024 minimum.
    assert p.expected_cached_tokens == 1024 + 2 * 128
    assert p.breakpoints == []


def test_chat_static_first_and_context_in_the_newest_user_message() -> None:
    p = plan("chat", chat(), policy())
    msgs = p.body["messages"]
    assert msgs[0] == {"role": "system", "content": STATIC}
    assert msgs[3] == {"role": "user", "content": f"{CONTEXT}\n\nThanks."}
    assert msgs[1:3] == chat()["messages"][1:3]
    assert p.body["prompt_cache_key"] == f"support-{p.static_hash[:8]}"  # type: ignore[index]


def test_prompt_cache_key_from_the_policy_or_the_client() -> None:
    assert plan("chat", chat(), policy(promptCacheKey="k1")).body["prompt_cache_key"] == "k1"
    p = plan("chat", chat(prompt_cache_key="mine"), policy(promptCacheKey="k1"))
    assert p.body["prompt_cache_key"] == "mine"


def test_openai_compatible_gets_no_extra_field() -> None:
    p = plan("chat", chat(), policy("openai-compatible"))
    assert "prompt_cache_key" not in p.body
    assert p.body["messages"][0]["content"] == STATIC
    assert p.diagnostics is not None
    assert p.diagnostics.provider == "openai-compatible"


def test_content_parts_stay_parts() -> None:
    b = chat(system=[{"type": "text", "text": LEGACY_SYSTEM}])
    b["messages"][3] = {"role": "user", "content": [{"type": "text", "text": "Thanks."}]}
    p = plan("chat", b, policy())
    assert p.body["messages"][0]["content"] == [{"type": "text", "text": STATIC}]
    assert p.body["messages"][3]["content"] == [
        {"type": "text", "text": CONTEXT},
        {"type": "text", "text": "Thanks."},
    ]


def test_developer_role_is_the_system_prompt() -> None:
    b = chat()
    b["messages"][0]["role"] = "developer"
    p = plan("chat", b, policy())
    assert p.body["messages"][0] == {"role": "developer", "content": STATIC}


def test_inject_without_a_system_message_adds_one() -> None:
    spec = parse_policy({"provider": "openai", "staticBlocks": [{"name": "x", "content": STATIC}]})
    b = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}
    p = plan("chat", b, spec, context=(ContextBlock("profile", "gold"),))
    assert p.body["messages"] == [
        {"role": "system", "content": STATIC},
        {"role": "user", "content": '<context name="profile">\ngold\n</context>\n\nHi'},
    ]


def test_responses_instructions_and_input_items() -> None:
    b = {
        "model": "gpt-4o",
        "instructions": LEGACY_SYSTEM,
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "Where?"}]},
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c", "output": "here"},
        ],
    }
    p = plan("responses", b, policy())
    assert p.body["instructions"] == STATIC
    assert p.body["input"][0]["content"] == [
        {"type": "input_text", "text": CONTEXT},
        {"type": "input_text", "text": "Where?"},
    ]
    assert p.body["input"][1:] == b["input"][1:]


def test_responses_string_input_gets_the_context_first() -> None:
    b = {"model": "gpt-4o", "instructions": LEGACY_SYSTEM, "input": "Where?"}
    p = plan("responses", b, policy())
    assert p.body["input"] == f"{CONTEXT}\n\nWhere?"


@pytest.mark.parametrize("route", ["chat", "responses"])
def test_planning_a_planned_request_changes_nothing(route: Route) -> None:
    if route == "chat":
        b = chat()
    else:
        b = {"model": "gpt-4o", "instructions": LEGACY_SYSTEM, "input": "Where?"}
    first = plan(route, b, policy())
    again = plan(route, first.body, policy())
    assert again.body == first.body
    assert not again.changed


def test_observe_mode_keeps_the_request() -> None:
    b = chat()
    p = plan("chat", b, policy(mode="observe"))
    assert p.body is b
    assert p.observe_only
    assert p.expected_cached_tokens >= 1024


def test_rejects_a_body_without_messages() -> None:
    with pytest.raises(ValueError, match="messages"):
        Planner().plan(PlanRequest(route="chat", body={"model": "gpt-4o"}))


# --- GPT-5.6+: explicit breakpoints at the stable boundary ---------------------------------


def _breakpoints(b: dict[str, Any], key: str = "messages") -> list[tuple[int, int]]:
    found: list[tuple[int, int]] = []
    for i, item in enumerate(b.get(key) or []):
        content = item.get("content") if isinstance(item, dict) else None
        for j, part in enumerate(content if isinstance(content, list) else []):
            if isinstance(part, dict) and "prompt_cache_breakpoint" in part:
                found.append((i, j))
    return found


def test_gpt_5_6_gets_a_breakpoint_at_the_end_of_the_static_part() -> None:
    p = plan("chat", chat(model="gpt-5.6-terra"), policy())
    system = p.body["messages"][0]["content"]
    assert _breakpoints(p.body) == [(0, 0)]
    assert system[0]["text"].startswith(STATIC)
    assert system[0]["prompt_cache_breakpoint"] == {"mode": "explicit"}
    assert "prompt_cache_options" not in p.body
    # The model reads the same text as before (parts are concatenated).
    again = plan("chat", chat(model="gpt-4o"), policy())
    assert "".join(part["text"] for part in system) == again.body["messages"][0]["content"]
    assert plan("chat", p.body, policy()).body == p.body


@pytest.mark.parametrize(
    ("model", "provider"),
    [("gpt-4o", "openai"), ("gpt-5.5", "openai"), ("gpt-5.6-terra", "openai-compatible")],
)
def test_no_breakpoint_where_the_field_is_unknown(model: str, provider: str) -> None:
    p = plan("chat", chat(model=model), policy(provider=provider))
    assert _breakpoints(p.body) == []


def test_an_app_breakpoint_is_left_alone() -> None:
    b = chat(model="gpt-5.6-terra")
    b["messages"][1] = {
        "role": "user",
        "content": [{"type": "text", "text": "q", "prompt_cache_breakpoint": {"mode": "explicit"}}],
    }
    assert _breakpoints(plan("chat", b, policy()).body) == [(1, 0)]


def test_an_app_in_explicit_mode_is_left_alone() -> None:
    b = chat(model="gpt-5.6-terra", prompt_cache_options={"mode": "explicit"})
    assert _breakpoints(plan("chat", b, policy()).body) == []


def test_responses_system_item_gets_the_breakpoint() -> None:
    b = {
        "model": "gpt-5.6-sol",
        "input": [
            {"role": "developer", "content": LEGACY_SYSTEM},
            {"role": "user", "content": "Where is my order?"},
        ],
    }
    p = plan("responses", b, policy())
    assert _breakpoints(p.body, "input") == [(0, 0)]
    assert p.body["input"][0]["content"][0]["type"] == "input_text"
