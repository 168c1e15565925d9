"""Table tests for the Anthropic rewrite rules, one rule per test.

Every planned body is also checked by the simulator's validator, which rejects what the
API rejects (more than 4 markers, 1h after 5m, markers on empty or thinking blocks).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from promptcache.policy import PolicySpec, parse_policy
from promptcache.sidecar.planner import ContextBlock, Plan, Planner, PlanRequest
from promptcache.simulator.anthropic_cache import VERSION_2026, parse_request

STATIC = "Static instructions for the support agent. " * 120  # ~5,200 chars, ~1,300 tokens
LONG = "A long earlier turn of the conversation. " * 60  # ~600 tokens
STAMP = "2025-05-01T10:00:00Z"
RID = "0b6c1c1e-8a8e-4b6a-9f57-2f0c5d9a1b11"
MODEL = "claude-sonnet-4-5"  # minimum 1,024 tokens


def policy(**spec: Any) -> PolicySpec:
    return parse_policy(spec)


def match_static(**extra: Any) -> dict[str, Any]:
    block = {"name": "core", "mode": "match", "match": {"role": "system", "exact": STATIC}}
    return {**block, **extra}


def body(system: Any = STATIC, messages: list[Any] | None = None, **extra: Any) -> dict[str, Any]:
    msgs = messages if messages is not None else [{"role": "user", "content": "Hello?"}]
    out: dict[str, Any] = {"model": MODEL, "max_tokens": 100, "messages": msgs, **extra}
    if system is not None:
        out["system"] = system
    return out


def conversation(newest: Any = "And now?") -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": LONG},
        {"role": "assistant", "content": LONG},
        {"role": "user", "content": newest},
    ]


def plan(
    b: dict[str, Any],
    spec: PolicySpec | None = None,
    *,
    planner: Planner | None = None,
    context: tuple[ContextBlock, ...] = (),
) -> Plan:
    before = copy.deepcopy(b)
    p = (planner or Planner(learning=False)).plan(
        PlanRequest(route="messages", body=b, policy_name="p", policy=spec, context=context)
    )
    assert b == before, "the planner mutated its input"
    parse_request(p.body, version=VERSION_2026)  # the simulator's API validation
    return p


def markers(b: dict[str, Any]) -> list[tuple[str, str]]:
    """(path, ttl) of every cache marker in ``b``, in prefix order."""
    found: list[tuple[str, str]] = []

    def add(path: str, block: Any) -> None:
        if isinstance(block, dict) and "cache_control" in block:
            found.append((path, block["cache_control"].get("ttl", "5m")))

    for i, t in enumerate(b.get("tools") or []):
        add(f"tools[{i}]", t)
    if isinstance(b.get("system"), list):
        for i, blk in enumerate(b["system"]):
            add(f"system[{i}]", blk)
    for i, m in enumerate(b["messages"]):
        if isinstance(m["content"], list):
            for j, blk in enumerate(m["content"]):
                add(f"messages[{i}].content[{j}]", blk)
    return found


def cc(ttl: str = "5m") -> dict[str, str]:
    return {"type": "ephemeral", "ttl": ttl}


# --- no policy -------------------------------------------------------------------------


def test_no_policy_marks_system_end_and_stable_history() -> None:
    p = plan(body(messages=conversation()))
    assert markers(p.body) == [("system[0]", "5m"), ("messages[1].content[0]", "5m")]
    assert p.body["system"] == [
        {"type": "text", "text": STATIC, "cache_control": {"type": "ephemeral"}}
    ]
    assert p.body["messages"][2] == {"role": "user", "content": "And now?"}
    assert [b.tier for b in p.breakpoints] == ["system", "history"]
    assert p.changed
    assert p.static_tokens == 1290


def test_no_policy_below_the_minimum_changes_nothing() -> None:
    b = body(system="Be brief.")
    p = plan(b)
    assert p.body is b
    assert not p.changed
    assert p.breakpoints == []
    assert p.expected_cached_tokens == 0
    assert any("minimum" in n for n in p.notes)


def test_no_policy_adds_nothing_next_to_client_markers() -> None:
    msgs = conversation()
    msgs[0] = {"role": "user", "content": [{"type": "text", "text": LONG, "cache_control": cc()}]}
    b = body(messages=msgs)
    p = plan(b)
    assert p.body is b
    assert [(x.placed_by, x.path) for x in p.breakpoints] == [("client", "messages[0].content[0]")]


def test_system_string_stays_a_string_when_no_marker_is_needed() -> None:
    b = body(system="Short system.", messages=conversation())
    p = plan(b)
    assert p.body["system"] == "Short system."


# --- slots and TTL order -----------------------------------------------------------------


def test_client_markers_count_toward_the_four_slots() -> None:
    msgs = conversation()
    msgs[0] = {
        "role": "user",
        "content": [
            {"type": "text", "text": "a", "cache_control": cc()},
            {"type": "text", "text": "b", "cache_control": cc()},
            {"type": "text", "text": LONG, "cache_control": cc()},
        ],
    }
    p = plan(body(messages=msgs), policy(staticBlocks=[match_static()]))
    assert len(markers(p.body)) == 4
    assert markers(p.body)[0] == ("system[0]", "5m")  # the most valuable candidate won
    assert p.body["messages"][0] == msgs[0]  # client markers untouched
    assert any("slots" in n for n in p.notes)


def test_a_top_level_automatic_marker_takes_a_slot() -> None:
    msgs = conversation()
    msgs[0] = {
        "role": "user",
        "content": [{"type": "text", "text": t, "cache_control": cc()} for t in ("x", "y", LONG)],
    }
    b = body(messages=msgs, cache_control={"type": "ephemeral"})
    p = plan(b, policy(staticBlocks=[match_static()]))
    assert "system" not in {x.tier for x in p.breakpoints if x.placed_by == "planner"}
    assert [x.tier for x in p.breakpoints][-1] == "automatic"
    assert len(p.breakpoints) == 4


def test_our_1h_marker_falls_back_to_5m_after_a_client_5m_marker() -> None:
    tools = [{"name": "t", "description": LONG, "input_schema": {}, "cache_control": cc("5m")}]
    p = plan(body(tools=tools), policy(staticBlocks=[match_static(ttl="1h")]))
    assert markers(p.body) == [("tools[0]", "5m"), ("system[0]", "5m")]
    assert any("would follow a 5m marker" in n for n in p.notes)


def test_no_5m_marker_before_a_client_1h_marker() -> None:
    msgs = conversation()
    msgs[0] = {
        "role": "user",
        "content": [{"type": "text", "text": LONG, "cache_control": cc("1h")}],
    }
    p = plan(body(messages=msgs), policy(staticBlocks=[match_static()]))
    # A 5m system marker cannot precede the client's 1h entry: it becomes 1h (longer TTLs
    # first) rather than leave the static prefix without a marker; history follows at 5m.
    assert markers(p.body) == [
        ("system[0]", "1h"),
        ("messages[0].content[0]", "1h"),
        ("messages[1].content[0]", "5m"),
    ]
    assert any("precede a client 1h marker; using 1h" in n for n in p.notes)


def test_1h_static_block_before_a_5m_one_gets_its_own_marker() -> None:
    other = "Second static block, refreshed more often. " * 10
    spec = policy(
        staticBlocks=[
            match_static(ttl="1h"),
            {"name": "extra", "content": other, "ttl": "5m"},
        ]
    )
    p = plan(body(), spec)
    assert [blk["text"] for blk in p.body["system"]] == [STATIC, other]
    assert markers(p.body) == [("system[0]", "1h"), ("system[1]", "5m")]


def test_breakpoint_tiers_can_be_switched_off() -> None:
    spec = policy(staticBlocks=[match_static()], breakpoints={"system": False, "history": True})
    p = plan(body(messages=conversation()), spec)
    assert markers(p.body) == [("messages[1].content[0]", "5m")]


def test_tools_marker_when_asked_and_long_enough() -> None:
    tools = [{"name": "lookup", "description": STATIC, "input_schema": {"type": "object"}}]
    p = plan(body(tools=tools), policy(staticBlocks=[match_static(ttl="1h")]))
    assert markers(p.body) == [("tools[0]", "1h"), ("system[0]", "1h")]


def test_policy_minimum_override() -> None:
    spec = policy(staticBlocks=[match_static()], minCacheableTokens=5000)
    p = plan(body(), spec)
    assert markers(p.body) == []
    assert p.expected_cached_tokens == 0


# --- static blocks -----------------------------------------------------------------------


def test_legacy_system_becomes_static_block_and_context() -> None:
    head = f"Current date and time: {STAMP}\nRequest ID: {RID}"
    system = f"{head}\n\n{STATIC}\n\n<customer>Jane</customer>"
    spec = policy(
        staticBlocks=[match_static()],
        volatile={"action": "relocate", "unmatchedSystem": "relocate"},
    )
    p = plan(body(system=system, messages=conversation()), spec)
    assert p.body["system"] == [
        {"type": "text", "text": STATIC, "cache_control": {"type": "ephemeral"}}
    ]
    newest = p.body["messages"][2]["content"]
    assert newest[1] == {"type": "text", "text": "And now?"}
    assert newest[0]["text"] == (
        '<context name="system">\n'
        f"Current date and time: {STAMP}\nRequest ID: {RID}\n\n<customer>Jane</customer>\n"
        "</context>"
    )
    assert markers(p.body)[-1] == ("messages[1].content[0]", "5m")
    assert [(r.detector, r.offset) for r in p.relocations] == [
        ("unmatched_system", 0),
        ("unmatched_system", len(system) - len("\n\n<customer>Jane</customer>")),
    ]


KEEP_CUSTOMER = {
    "action": "relocate",
    "unmatchedSystem": "relocate",
    "keepInPlace": [{"name": "customer", "regex": r"<customer>[\s\S]*?</customer>"}],
}


def test_keep_in_place_leaves_the_customer_after_the_static_part() -> None:
    customer = "<customer>\nid: C-1\nplaced 2025-03-01\n</customer>"
    docs = "<policy_documents>doc A</policy_documents>"
    system = f"Current date and time: {STAMP}\n\n{STATIC}\n\n{customer}\n{docs}"
    spec = policy(staticBlocks=[match_static()], volatile=KEEP_CUSTOMER)
    p = plan(body(system=system, messages=conversation()), spec)
    assert p.body["system"] == [
        {"type": "text", "text": STATIC, "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": customer},
    ]
    # The date inside the kept block is not a volatile span: the policy says it stays.
    assert p.context_text is not None
    assert docs in p.context_text
    assert STAMP in p.context_text
    assert "C-1" not in p.context_text
    assert [r.detector for r in p.relocations] == ["unmatched_system", "unmatched_system"]
    again = plan(p.body, spec)
    assert not again.changed


def test_keep_in_place_is_part_of_the_history_prediction() -> None:
    """The next turn reads the history only while the kept text is unchanged."""
    spec = policy(staticBlocks=[match_static()], volatile=KEEP_CUSTOMER)
    planner = Planner()

    def turn(customer: str, messages: list[dict[str, Any]]) -> Plan:
        system = f"{STATIC}\n\n<customer>{customer}</customer>\n<docs>{len(messages)}</docs>"
        return plan(body(system=system, messages=messages), spec, planner=planner)

    first = conversation()
    turn("Jane", first)
    later = [*first, {"role": "assistant", "content": LONG}, {"role": "user", "content": "Hm?"}]
    same = turn("Jane", later)
    assert same.diagnostics is not None
    assert same.diagnostics.history_read_fp is not None
    other = turn("Joan", later)
    assert other.diagnostics is not None
    assert other.diagnostics.history_read_fp != same.diagnostics.history_read_fp


def test_keep_in_place_needs_unmatched_relocate() -> None:
    with pytest.raises(ValueError, match="keepInPlace applies only"):
        policy(volatile={**KEEP_CUSTOMER, "unmatchedSystem": "keep"})


def test_inject_puts_the_block_first_once() -> None:
    spec = policy(staticBlocks=[{"name": "core", "content": STATIC}])
    p = plan(body(system="App prompt."), spec)
    assert [blk["text"] for blk in p.body["system"]] == [STATIC, "App prompt."]
    again = plan(p.body, spec)
    assert again.body == p.body
    assert not again.changed


def test_prefix_and_sha256_matches() -> None:
    import hashlib

    digest = hashlib.sha256(STATIC.encode()).hexdigest()
    for match in ({"prefix": STATIC}, {"sha256": digest}):
        spec = policy(staticBlocks=[{"name": "core", "mode": "match", "match": match}])
        p = plan(body(system=STATIC), spec)
        assert p.body["system"][0]["text"] == STATIC
        assert markers(p.body) == [("system[0]", "5m")]


def test_static_block_not_found_leaves_the_system_in_place() -> None:
    spec = policy(
        staticBlocks=[match_static()], volatile={"unmatchedSystem": "relocate", "detectors": []}
    )
    p = plan(body(system="Something else entirely. " * 200), spec)
    assert p.body["system"][0]["text"].startswith("Something else")
    assert p.context_text is None
    assert any("not found" in n for n in p.notes)


# --- volatile spans ----------------------------------------------------------------------


def test_relocate_moves_volatile_lines_behind_the_prefix() -> None:
    spec = policy(volatile={"action": "relocate"})
    p = plan(body(system=f"Current time: {STAMP}\n{STATIC}"), spec)
    assert p.body["system"][0]["text"] == STATIC.strip()
    assert p.body["messages"][0]["content"][0]["text"] == (
        f'<context name="datetime">\nCurrent time: {STAMP}\n</context>'
    )
    assert p.volatile_found == {"datetime": 1}


def test_report_counts_spans_and_moves_nothing() -> None:
    system = f"Now: {STAMP} id {RID}\n{STATIC}"
    p = plan(body(system=system), policy())
    assert p.volatile_found == {"datetime": 1, "uuid": 1}
    assert p.relocations == []
    assert p.context_text is None
    assert p.body["system"][0]["text"] == system


def test_policy_regex_detector() -> None:
    spec = policy(
        volatile={"action": "relocate", "patterns": [{"name": "ticket", "regex": r"TICKET-\d+"}]}
    )
    p = plan(body(system=f"{STATIC}\nOpen ticket: TICKET-42"), spec)
    assert p.relocations[0].detector == "ticket"
    assert "TICKET-42" in (p.context_text or "")
    assert "TICKET-42" not in p.body["system"][0]["text"]


# --- context placement -------------------------------------------------------------------


def test_context_goes_after_leading_tool_results() -> None:
    msgs = [
        {"role": "user", "content": LONG},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "tool_use", "id": "t1", "name": "lookup", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "42"}],
        },
    ]
    p = plan(body(messages=msgs), context=(ContextBlock("profile", "gold tier"),))
    content = p.body["messages"][2]["content"]
    # A turn of tool results only stays one (text beside them would start a new user
    # turn: the loop's thinking dropped, the cached messages tier changed); this model
    # takes no mid-conversation system message, so the context goes inside the result.
    assert [blk["type"] for blk in content] == ["tool_result"]
    assert content[0]["content"] == [
        {"type": "text", "text": "42"},
        {"type": "text", "text": '<context name="profile">\ngold tier\n</context>'},
    ]
    assert len(p.body["messages"]) == 3
    # The history marker skips nothing cacheable: it sits on the tool_use block.
    assert ("messages[1].content[1]", "5m") in markers(p.body)
    # Planning the planned body again changes nothing more.
    again = plan(p.body, context=(ContextBlock("profile", "gold tier"),))
    assert again.body["messages"] == p.body["messages"]


def test_context_in_a_tool_loop_is_a_system_message_where_the_model_takes_one() -> None:
    msgs = [
        {"role": "user", "content": LONG},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "tool_use", "id": "t1", "name": "lookup", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "42"}],
        },
    ]
    request = body(messages=msgs) | {"model": "claude-opus-4-8"}
    p = plan(request, context=(ContextBlock("profile", "gold tier"),))
    out = p.body["messages"]
    assert out[2] == msgs[2]  # the tool results untouched
    assert out[3] == {
        "role": "system",
        "content": [{"type": "text", "text": '<context name="profile">\ngold tier\n</context>'}],
    }
    assert plan(p.body, context=(ContextBlock("profile", "gold tier"),)).body == p.body


def test_markers_nested_in_tool_results_take_slots() -> None:
    nested = {"type": "text", "text": "result", "cache_control": cc()}
    msgs = [
        {"role": "user", "content": [{"type": "text", "text": LONG, "cache_control": cc()}]},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t1", "name": "x", "input": {}}],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": [nested, dict(nested)]},
            ],
        },
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t2", "name": "x", "input": {}}],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "t2", "content": [nested]}],
        },
    ]
    # Four app markers, one of them two levels down: the planner adds none (a fifth is
    # the provider's 400), and the simulator (which counts them all) accepts the result.
    p = plan(body(messages=msgs), policy(staticBlocks=[match_static()]))
    assert "system" not in {path.split("[")[0] for path, _ in markers(p.body)}
    assert any("all 4 slots in use" in n for n in p.notes)


def test_automatic_1h_cache_control_gets_a_compatible_static_marker() -> None:
    p = plan(body(messages=conversation()) | {"cache_control": {"type": "ephemeral", "ttl": "1h"}})
    assert ("system[0]", "1h") in markers(p.body)
    assert p.body["cache_control"] == {"type": "ephemeral", "ttl": "1h"}


def test_context_goes_after_a_client_marked_block_of_the_newest_message() -> None:
    newest = [
        {"type": "text", "text": "doc", "cache_control": cc()},
        {"type": "text", "text": "question"},
    ]
    msgs = [{"role": "user", "content": newest}]
    p = plan(body(messages=msgs), policy(), context=(ContextBlock("c", "x"),))
    texts = [blk["text"] for blk in p.body["messages"][0]["content"]]
    assert texts == ["doc", '<context name="c">\nx\n</context>', "question"]


def test_without_a_user_message_context_closes_the_system_prompt() -> None:
    msgs = [{"role": "assistant", "content": "Prefilled"}]
    p = plan(body(messages=msgs), policy(), context=(ContextBlock("c", "x"),))
    assert p.body["system"][-1]["text"] == '<context name="c">\nx\n</context>'
    assert markers(p.body) == [("system[0]", "5m")]


# --- tools, observe mode ---------------------------------------------------------------


def _tools(*names: str) -> list[dict[str, Any]]:
    return [{"name": n, "description": n, "input_schema": {}} for n in names]


@pytest.mark.parametrize(("canonical", "order"), [(False, ["b", "a"]), (True, ["a", "b"])])
def test_tool_order(canonical: bool, order: list[str]) -> None:
    p = plan(body(tools=_tools("b", "a")), policy(canonicalToolOrder=canonical))
    assert [t["name"] for t in p.body["tools"]] == order


def test_observe_mode_forwards_the_original_and_predicts() -> None:
    spec = policy(mode="observe", staticBlocks=[match_static()])
    b = body(messages=conversation())
    p = plan(b, spec)
    assert p.observe_only
    assert p.body is b
    assert not p.changed
    assert p.expected_cached_tokens == 1290
    assert len(p.breakpoints) == 2


def test_rejects_bodies_it_cannot_plan() -> None:
    with pytest.raises(ValueError, match=r"messages\[0\]\.content"):
        Planner().plan(PlanRequest(route="messages", body={"messages": [{"role": "user"}]}))


def test_a_rewritten_system_string_stays_a_string_without_a_marker() -> None:
    p = plan(body(system=f"Now: {STAMP}\nBe brief."), policy(volatile={"action": "relocate"}))
    assert p.body["system"] == "Be brief."
    assert p.body["messages"][0]["content"][0]["text"] == (
        f'<context name="datetime">\nNow: {STAMP}\n</context>'
    )


def test_no_second_system_message_after_the_apps_own() -> None:
    msgs = [
        {"role": "user", "content": LONG},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t1", "name": "x", "input": {}}],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "42"}],
        },
        {"role": "system", "content": "The app's own reminder."},
    ]
    request = body(messages=msgs) | {"model": "claude-opus-4-8"}
    p = plan(request, context=(ContextBlock("profile", "gold tier"),))
    out = p.body["messages"]
    assert [m["role"] for m in out] == ["user", "assistant", "user", "system"]
    assert out[2]["content"][0]["content"][-1]["text"].startswith('<context name="profile">')
