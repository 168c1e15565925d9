"""The agent app: tools, and a tool-use loop of several requests per question.

An order-operations agent for the case study's retailer. Every request carries the same
eight tool definitions (~550 tokens) and a system prompt that starts with the current
time and a trace id, then ~1,900 tokens of static instructions
(``policies/agent-static.txt``). For each customer question the agent calls one to three
tools before it answers: the app sends the question, takes the model's reply as the
reasoning before a tool call, runs the tool and sends its result back, as an agent
framework does. The tool calls and results are decided by the seed (the simulator
answers in text only), so each request has the shape and size a real tool loop's has:
assistant ``tool_use`` blocks and user ``tool_result`` blocks, a history that grows by a
tool result on every step. Its hand-written policy (``policies/agent.yaml``) pins the
static instructions and moves the time and id behind the history.
"""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

from promptcache.demo.app import Record, outcome_of, stream_call
from promptcache.demo.corpus import TOPICS
from promptcache.demo.shapes.common import (
    ChatApp,
    Session,
    Sessions,
    ToolCall,
    generate_sessions,
    now,
    request_id,
    think_times,
)
from promptcache.demo.workload import _CARRIERS, _PRODUCTS, POLICY_DIR, WorkloadConfig, _question

STATIC_FILE = POLICY_DIR / "agent-static.txt"
POLICY = POLICY_DIR / "agent.yaml"


def static_text() -> str:
    return STATIC_FILE.read_text("utf-8")


def _tool(name: str, description: str, props: dict[str, tuple[str, str]]) -> dict[str, Any]:
    return {
        "name": name,
        "description": description,
        "input_schema": {
            "type": "object",
            "properties": {k: {"type": t, "description": d} for k, (t, d) in props.items()},
            "required": list(props)[:1],
        },
    }


_ORDER = ("string", "The order number, NW- followed by seven digits, as the customer gives it.")
TOOLS: list[dict[str, Any]] = [
    _tool(
        "lookup_order",
        "Fetch one order of the signed-in customer: items, prices, payment, status, carrier "
        "and tracking number, and the return and warranty windows that apply to it. Returns "
        "an error when the order does not belong to the customer.",
        {"order_id": _ORDER},
    ),
    _tool(
        "track_parcel",
        "Ask the carrier for the tracking events of a parcel, newest first, with the "
        "carrier's own status text and the estimated delivery date when it has one.",
        {
            "carrier": ("string", "Carrier name as lookup_order returns it."),
            "tracking_number": ("string", "The carrier's tracking number."),
        },
    ),
    _tool(
        "search_policies",
        "Search the retailer's policy documents; returns the best matching sections with "
        "their document id, version and effective date. Quote them by id.",
        {
            "query": ("string", "What to look for, in a few words."),
            "topic": ("string", "Optional topic: shipping, returns, refunds, billing, etc."),
        },
    ),
    _tool(
        "issue_refund",
        "Refund an order or some of its items to the original payment method. Needs an "
        "order that lookup_order confirmed; refunds above EUR 500 are queued for approval.",
        {
            "order_id": _ORDER,
            "amount_eur": ("number", "Amount to refund, at most the amount paid."),
            "reason": ("string", "One of: late, lost, faulty, return, goodwill."),
        },
    ),
    _tool(
        "create_return_label",
        "Create a prepaid return label for items of an order within the return window; "
        "returns the label's download link and the drop-off points near the customer.",
        {
            "order_id": _ORDER,
            "items": ("array", "Line numbers of the items to return."),
        },
    ),
    _tool(
        "update_address",
        "Change the delivery address of an order that has not been dispatched yet.",
        {
            "order_id": _ORDER,
            "address": ("string", "The full new address, one line."),
        },
    ),
    _tool(
        "escalate_to_human",
        "Hand the case to a human agent with a three-line summary; returns the queue and the "
        "expected answer time.",
        {
            "summary": ("string", "What the customer wants, what was checked, what is open."),
            "priority": ("string", "normal, high or safety."),
        },
    ),
    _tool(
        "send_email",
        "Send the customer a confirmation email with the outcome of the conversation.",
        {
            "subject": ("string", "Subject line."),
            "body": ("string", "Plain-text body."),
        },
    ),
]


def _order_result(rng: random.Random, order: str) -> str:
    items = [
        {
            "line": i + 1,
            "product": rng.choice(_PRODUCTS),
            "price_eur": round(rng.uniform(29, 480), 2),
            "quantity": 1,
        }
        for i in range(rng.randint(1, 4))
    ]
    return json.dumps(
        {
            "order_id": order,
            "placed": f"2026-{rng.randint(1, 11):02d}-{rng.randint(1, 28):02d}",
            "status": rng.choice(("dispatched", "in transit", "delivered", "processing")),
            "items": items,
            "payment": {"method": "card", "last4": f"{rng.randint(0, 9999):04d}"},
            "carrier": rng.choice(_CARRIERS),
            "tracking_number": str(rng.randint(10**11, 10**12 - 1)),
            "return_window_days": rng.choice((30, 60)),
            "warranty_years": 2,
        },
        indent=1,
    )


def _tracking_result(rng: random.Random) -> str:
    events = [
        {
            "time": f"2026-11-{rng.randint(1, 28):02d}T{rng.randint(6, 21):02d}:"
            f"{rng.randint(0, 59):02d}:00Z",
            "status": rng.choice(
                ("arrived at hub", "out for delivery", "delivery attempted", "in transit")
            ),
            "location": rng.choice(("Hamburg", "Lyon", "Utrecht", "Malmo", "Leeds", "Graz")),
        }
        for _ in range(rng.randint(3, 8))
    ]
    return json.dumps({"events": events, "estimated_delivery": None}, indent=1)


def _policy_result(rng: random.Random, topic: str) -> str:
    from promptcache.demo.corpus import corpus

    docs = [d for d in corpus() if d.topic == topic]
    return "\n".join(d.render() for d in rng.sample(docs, k=min(2, len(docs))))


def _calls(rng: random.Random, topic: str) -> tuple[ToolCall, ...]:
    order = f"NW-{rng.randint(1000000, 9999999)}"
    calls = [ToolCall("lookup_order", {"order_id": order}, _order_result(rng, order), 0.3)]
    follow = rng.choice(("track_parcel", "search_policies", "search_policies", None))
    if follow == "track_parcel":
        calls.append(
            ToolCall(
                "track_parcel",
                {"carrier": "DHL", "tracking_number": str(rng.randint(10**11, 10**12 - 1))},
                _tracking_result(rng),
                0.6,
            )
        )
    elif follow == "search_policies":
        calls.append(
            ToolCall(
                "search_policies",
                {"query": f"{topic} policy", "topic": topic},
                _policy_result(rng, topic),
                0.4,
            )
        )
    if rng.random() < 0.3:
        calls.append(
            ToolCall(
                "send_email",
                {"subject": "Your request", "body": "Summary of what we agreed."},
                json.dumps({"sent": True, "message_id": request_id(rng)}),
                0.2,
            )
        )
    return tuple(calls)


def _session(config: WorkloadConfig, rng: random.Random, user: int, index: int) -> Session:
    topic = rng.choice(TOPICS)
    # Each question costs one request per tool call plus the answer: fewer questions
    # than the chat apps' turns keep the request count comparable.
    n = max(1, rng.randint(*config.turns) // 2)
    questions = tuple(_question(rng, topic, first=t == 0) for t in range(n))
    tools = tuple(_calls(rng, topic.name) for _ in range(n))
    ids = tuple(request_id(rng) for _ in range(n + sum(len(t) for t in tools)))
    return Session(
        user=user,
        index=index,
        key=0,
        questions=questions,
        request_ids=ids,
        think_times=think_times(config, rng, index, n),
        tools=tools,
    )


def generate(config: WorkloadConfig) -> Sessions:
    return generate_sessions(config, lambda rng, u, i: _session(config, rng, u, i))


def system_prompt(*, now: str, trace_id: str) -> str:
    return f"Current time: {now}\nTrace ID: {trace_id}\n\n{static_text()}"


class AgentApp(ChatApp):
    async def conversation(self, session: Session, *, time_scale: float, record: Record) -> None:
        history: list[dict[str, Any]] = []
        step = 0
        for q, question in enumerate(session.questions):
            await asyncio.sleep(session.think_times[q] * time_scale)
            history.append({"role": "user", "content": question})
            calls = session.tools[q]
            for i in range(len(calls) + 1):
                call = await stream_call(
                    self._client,
                    model=self.config.model,
                    max_tokens=self.config.max_tokens,
                    system=system_prompt(now=now(), trace_id=session.request_ids[step]),
                    messages=history,
                    tools=TOOLS,
                )
                record(outcome_of(call, user=session.user, conversation=session.index, turn=step))
                step += 1
                if call.error:
                    return  # the user gives up on this conversation
                text = [{"type": "text", "text": call.reply}] if call.reply else []
                if i == len(calls):
                    answer = text or [{"type": "text", "text": "(no answer)"}]
                    history.append({"role": "assistant", "content": answer})
                    break
                tool = calls[i]
                use_id = f"toolu_{session.user:03d}{session.index:02d}{step:03d}"
                history.append(
                    {
                        "role": "assistant",
                        "content": [
                            *text,
                            {"type": "tool_use", "id": use_id, "name": tool.name,
                             "input": tool.input},
                        ],
                    }
                )  # fmt: skip
                await asyncio.sleep(tool.seconds * time_scale)
                history.append(
                    {
                        "role": "user",
                        "content": [
                            {"type": "tool_result", "tool_use_id": use_id, "content": tool.result}
                        ],
                    }
                )

    def system(self, session: Session, turn: int) -> str:
        return system_prompt(now=now(), trace_id=session.request_ids[turn])
