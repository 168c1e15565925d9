"""The product's promise, end to end: a timestamp at the top of the system prompt no longer
stops a multi-turn conversation from being served from cache.

The app is the official SDK with no code path special to the test: every request starts
its system prompt with ``Current time: <ISO timestamp>`` (new each request) followed by
~6,000 characters of static instructions, and the conversation grows by the app
appending each answer. It runs against the real ``promptcache simulate`` process, once
directly and once through the real ``promptcache sidecar`` process whose policy is only
``{provider: ..., volatile: {action: relocate}}``.

No ``staticBlocks`` entry is needed: with none, the planner treats the whole system
prompt as the part to cache (``sidecar.planner.system.plan_system``), cuts the line
holding the timestamp out of it (the built-in ``datetime`` detector; a short line moves
whole, label included) and re-emits it once, as ``<context name="datetime">``, in the
newest user message. On Anthropic it then marks the end of the system prompt and the end
of the stable history (the message before the newest user message); on OpenAI it sets a
``prompt_cache_key`` and the provider caches the now stable prefix by itself.

Between the sidecar and the simulator sits ``Tap``, a byte-for-byte pass-through that
keeps each request it forwarded, so the tests can see what the model received. The
hit-rate figures are printed (``-s``) as well as asserted.

What is left uncached is the newest exchange: the previous answer was never part of a
prompt, and the simulator's answers (150-300 words, ~1.6 input tokens each) are long
next to the ~1,500-token system prompt; OpenAI also rounds hits down to 128 tokens. The
app's clock starts at a fixed ``START`` so the run is reproducible; over 30 other start
times turns 2..6 read 83.6-86.4% (Anthropic) and 80.3-83.9% (OpenAI) of their input
from cache.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from anthropic.types import MessageParam
from openai.types.chat import ChatCompletionMessageParam
from prometheus_client.parser import text_string_to_metric_families

from promptcache.demo.services import get_text, sidecar_tokens
from promptcache.usage import Usage, from_anthropic, total
from tests.local.conftest import RunSidecar

pytestmark = pytest.mark.timeout(120)

ANTHROPIC_MODEL = "claude-sonnet-4-6"
OPENAI_MODEL = "gpt-4o-mini"
KEY = "sk-e2e-test-key"
TURNS = 6
MAX_TOKENS = 1024
"""What a chat app asks for; the simulator's answers run 150-300 tokens."""
START = datetime(2026, 3, 2, 9, 30, 0, 125_000, tzinfo=UTC)

_TOPICS = (
    "greeting customers", "verifying identity", "order status", "delivery delays",
    "returns and refunds", "damaged goods", "billing questions", "subscription changes",
    "account security", "escalation to a human", "tone and language", "closing a conversation",
)  # fmt: skip
STATIC = "\n\n".join(
    f"## {topic.capitalize()}\n"
    f"When the conversation is about {topic}, follow the steps of this section in order. "
    "Read the customer's message twice and restate the problem in one sentence before you "
    "answer. Use only the facts the customer gave you and the policies written here; never "
    "invent order details, prices or dates. If a policy below does not cover the case, say "
    "so plainly and offer to hand the conversation to a human agent. Keep answers short, "
    "friendly and free of internal jargon, and end with one clear next step."
    for topic in _TOPICS
)
"""~6,000 characters of instructions that never change."""
QUESTIONS = (
    "Hi, my parcel has not arrived yet. Can you check where it is?",
    "It was supposed to come last Tuesday. What can I do now?",
    "Okay. And if it never shows up, do I get my money back?",
    "How long does a refund usually take to reach my card?",
    "Can I also change my subscription to the cheaper plan?",
    "Thanks. Please summarise what we agreed on.",
)


class AppClock:
    """The app's clock: starts at ``start`` and moves ``step`` on every reading.

    A fixed start keeps a run reproducible (the simulator's answers, and so the history's
    length, depend on the whole prompt, timestamp included).
    """

    def __init__(self, start: datetime = START, step: timedelta = timedelta(seconds=7.25)):
        self.now, self.step = start, step

    def __call__(self) -> datetime:
        self.now += self.step
        return self.now


def system_prompt(clock: AppClock) -> str:
    """The app's system prompt: the current time first, then the static instructions."""
    return f"Current time: {clock().isoformat()}\n{STATIC}"


def stamp_of(system: str) -> str:
    return system.split("\n", 1)[0].removeprefix("Current time: ")


# --------------------------------------------------------------------------- the tap
_HOP = frozenset({"host", "content-length", "transfer-encoding", "connection", "keep-alive"})


@dataclass
class Tap:
    """A pass-through in front of the simulator that keeps every request body it forwarded."""

    upstream: str
    session: aiohttp.ClientSession
    bodies: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        if raw:
            self.bodies.append(json.loads(raw))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        async with self.session.request(
            request.method, self.upstream + request.path_qs, data=raw, headers=headers
        ) as up:
            out = {k: v for k, v in up.headers.items() if k.lower() not in _HOP}
            response = web.StreamResponse(status=up.status, headers=out)
            await response.prepare(request)
            async for chunk in up.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response


@pytest.fixture
async def tap(simulator_url: str) -> AsyncIterator[Tap]:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        recorder = Tap(simulator_url, session)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", recorder.handle)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        recorder.url = str(server.make_url("")).rstrip("/")
        try:
            yield recorder
        finally:
            await server.close()


# --------------------------------------------------------------------------- helpers
def write_policy(path: Path, name: str, spec: str) -> Path:
    path.write_text(f"kind: PromptPolicy\nmetadata: {{name: {name}}}\nspec: {spec}\n", "utf-8")
    return path


def sidecar_args(policy: Path, upstream: str) -> list[str]:
    return [
        "--policy", str(policy), "--anthropic-upstream", upstream, "--openai-upstream", upstream,
    ]  # fmt: skip


async def sim_tokens(sim_url: str) -> Usage:
    """The simulator's input-token totals since it started (``GET /sim/stats``)."""
    tokens = json.loads(await get_text(sim_url + "/sim/stats"))["tokens"]
    return Usage(
        uncached=tokens["uncached"],
        cache_read=tokens["cache_read"],
        cache_write_5m=tokens["cache_write_5m"],
        cache_write_1h=tokens["cache_write_1h"],
        output=tokens["output"],
    )


def minus(a: Usage, b: Usage) -> Usage:
    return Usage(
        uncached=a.uncached - b.uncached,
        cache_read=a.cache_read - b.cache_read,
        cache_write_5m=a.cache_write_5m - b.cache_write_5m,
        cache_write_1h=a.cache_write_1h - b.cache_write_1h,
        output=a.output - b.output,
    )


def sample(metrics: str, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(
        s.value
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
        if s.name == name and labels.items() <= s.labels.items()
    )


async def settled_metrics(admin_url: str, calls: int) -> str:
    """The sidecar's ``/metrics`` once all ``calls`` are recorded (it records just after
    an answer is sent); bounded wait."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10.0
    while True:
        text = await get_text(admin_url + "/metrics")
        if sample(text, "promptcache_requests_total") >= calls or loop.time() > deadline:
            return text
        await asyncio.sleep(0.05)


def report(label: str, turns: list[Usage]) -> tuple[float, float]:
    """Hit rate over turns 2..N and over all turns; printed for the record."""
    later, overall = total(turns[1:]).hit_ratio, total(turns).hit_ratio
    rows = ", ".join(f"{u.cache_read}/{u.total_input}" for u in turns)
    print(f"\n{label}: cache_read/input per turn {rows}; turns 2..{len(turns)} {later:.1%}, "
          f"overall {overall:.1%}")  # fmt: skip
    return later, overall


# --------------------------------------------------------------------------- the apps
@dataclass
class Turn:
    stamp: str
    usage: Usage
    """Anthropic: what the SDK returned; OpenAI: what the simulator counted."""


async def anthropic_app(base_url: str, clock: AppClock) -> list[Turn]:
    """A streaming Anthropic chat app, ``TURNS`` turns; the usage the SDK returned."""
    turns: list[Turn] = []
    messages: list[MessageParam] = []
    async with anthropic.AsyncAnthropic(api_key=KEY, base_url=base_url, max_retries=0) as client:
        for question in QUESTIONS[:TURNS]:
            system = system_prompt(clock)
            messages.append({"role": "user", "content": question})
            async with client.messages.stream(
                model=ANTHROPIC_MODEL, max_tokens=MAX_TOKENS, system=system, messages=messages
            ) as stream:
                final = await stream.get_final_message()
            text = "".join(b.text for b in final.content if b.type == "text")
            messages.append({"role": "assistant", "content": text})
            turns.append(Turn(stamp_of(system), from_anthropic(final.usage.model_dump())))
    return turns


async def openai_app(base_url: str, sim_url: str, clock: AppClock) -> tuple[list[Turn], int]:
    """A streaming Chat Completions app (``stream_options`` unset), ``TURNS`` turns.

    The app gets no usage without ``stream_options``, so each turn's usage is what the
    simulator counted for it. Also returns how many chunks carried usage or no choice
    (the ``include_usage`` chunk, which this app did not ask for).
    """
    turns: list[Turn] = []
    history: list[ChatCompletionMessageParam] = []
    unasked = 0
    async with openai.AsyncOpenAI(api_key=KEY, base_url=base_url + "/v1", max_retries=0) as client:
        for question in QUESTIONS[:TURNS]:
            system = system_prompt(clock)
            history.append({"role": "user", "content": question})
            before = await sim_tokens(sim_url)
            stream = await client.chat.completions.create(
                model=OPENAI_MODEL,
                max_tokens=MAX_TOKENS,
                stream=True,
                messages=[{"role": "system", "content": system}, *history],
            )
            chunks = [chunk async for chunk in stream]
            unasked += sum(1 for c in chunks if not c.choices or c.usage is not None)
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            history.append({"role": "assistant", "content": text})
            turns.append(Turn(stamp_of(system), minus(await sim_tokens(sim_url), before)))
    return turns, unasked


def assert_stamps_distinct(turns: list[Turn]) -> None:
    assert len({t.stamp for t in turns}) == len(turns), "the app's clock did not move"


def assert_timestamp_seen_once(bodies: list[dict[str, Any]], turns: list[Turn]) -> None:
    """Each request the model got holds its own timestamp exactly once, in the newest
    user message's context block, and no other turn's timestamp."""
    assert len(bodies) == len(turns)
    for body, turn in zip(bodies, turns, strict=True):
        sent = json.dumps(body, ensure_ascii=False)
        assert sent.count(turn.stamp) == 1
        assert sent.count("Current time:") == 1
        assert not any(t.stamp in sent for t in turns if t is not turn)
        content = body["messages"][-1]["content"]
        newest = content if isinstance(content, str) else "".join(b["text"] for b in content)
        assert f'<context name="datetime">\nCurrent time: {turn.stamp}\n</context>' in newest


# --------------------------------------------------------------------------- Anthropic
async def test_anthropic_direct_reads_nothing_from_cache(simulator_url: str) -> None:
    turns = await anthropic_app(simulator_url, AppClock())
    assert_stamps_distinct(turns)
    used = total([t.usage for t in turns])
    report("anthropic direct", [t.usage for t in turns])
    assert used.total_input > TURNS * 1_500
    assert used.cache_read <= 0.05 * used.total_input


async def test_anthropic_relocate_serves_the_conversation_from_cache(
    simulator_url: str, tap: Tap, sidecar_process: RunSidecar, tmp_path: Path
) -> None:
    policy = write_policy(
        tmp_path / "p.yaml", "e2e-anthropic", "{provider: anthropic, volatile: {action: relocate}}"
    )
    async with sidecar_process(sidecar_args(policy, tap.url)) as sidecar:
        turns = await anthropic_app(sidecar.url, AppClock())
    usages = [t.usage for t in turns]
    later, _ = report("anthropic via sidecar (relocate)", usages)
    assert later >= 0.80
    assert usages[0].cache_read == 0
    assert usages[0].cache_write > 1_000
    assert all(u.cache_read > 1_000 for u in usages[1:])
    assert_stamps_distinct(turns)
    assert_timestamp_seen_once(tap.bodies, turns)
    for body in tap.bodies:  # the static instructions went as sent, and were marked
        assert body["system"][0]["text"] == STATIC
        assert "cache_control" in body["system"][-1]
    # What the simulator counted is what the app was told.
    assert await sim_tokens(simulator_url) == total(usages)


async def test_sidecar_metrics_agree_with_the_usage_the_sdk_returned(
    simulator_url: str, sidecar_process: RunSidecar, tmp_path: Path
) -> None:
    policy = write_policy(
        tmp_path / "p.yaml", "e2e-metrics", "{provider: anthropic, volatile: {action: relocate}}"
    )
    async with sidecar_process(sidecar_args(policy, simulator_url)) as sidecar:
        turns = await anthropic_app(sidecar.url, AppClock())
        metrics = await settled_metrics(sidecar.admin_url, TURNS)
    sdk = total([t.usage for t in turns])
    labels = {"provider": "anthropic", "model": ANTHROPIC_MODEL, "policy": "e2e-metrics"}
    name = "promptcache_input_tokens_total"
    assert sample(metrics, name, kind="cache_read", **labels) == sdk.cache_read > 0
    assert sample(metrics, name, kind="cache_write", **labels) == sdk.cache_write > 0
    assert sample(metrics, name, kind="uncached", **labels) == sdk.uncached > 0
    assert sample(metrics, "promptcache_output_tokens_total", **labels) == sdk.output > 0
    assert sample(metrics, "promptcache_requests_total", outcome="ok", **labels) == TURNS
    # The first turn wrote the prefix; every later turn read what the plan expected.
    misses = "promptcache_cache_misses_total"
    assert sample(metrics, misses, policy="e2e-metrics", reason="first_write") == 1
    assert sample(metrics, misses) == 1
    assert sample(metrics, "promptcache_volatile_spans_total", detector="datetime") == TURNS
    assert sample(metrics, "promptcache_breakpoints_total", tier="system") == TURNS
    assert sample(metrics, "promptcache_breakpoints_total", tier="history") == TURNS - 1


async def test_observe_mode_sends_requests_unchanged_and_predicts_savings(
    simulator_url: str, tap: Tap, sidecar_process: RunSidecar, tmp_path: Path
) -> None:
    policy = write_policy(
        tmp_path / "p.yaml",
        "e2e-observe",
        "{provider: anthropic, mode: observe, volatile: {action: relocate}}",
    )
    async with sidecar_process(sidecar_args(policy, tap.url)) as sidecar:
        turns = await anthropic_app(sidecar.url, AppClock())
        metrics = await settled_metrics(sidecar.admin_url, TURNS)
    usages = [t.usage for t in turns]
    report("anthropic via sidecar (observe)", usages)
    used = total(usages)
    assert used.cache_read <= 0.05 * used.total_input
    assert len(tap.bodies) == TURNS
    for body, turn in zip(tap.bodies, turns, strict=True):  # the app's request, as sent
        assert body["system"] == f"Current time: {turn.stamp}\n{STATIC}"
        assert "cache_control" not in json.dumps(body)
        assert all(isinstance(m["content"], str) for m in body["messages"])
    predicted = sample(
        metrics, "promptcache_predicted_cacheable_tokens_total", policy="e2e-observe"
    )
    saved = sample(metrics, "promptcache_predicted_savings_usd_total", policy="e2e-observe")
    print(f"observe: predicted cacheable tokens {predicted:.0f}, predicted savings ${saved:.6f}")
    assert predicted > 0
    assert saved > 0
    # Sonnet input is $3/M and reads cost 0.1x: each predicted token saves $2.7e-6.
    assert saved == pytest.approx(predicted * 3e-6 * 0.9)
    assert sample(metrics, "promptcache_breakpoints_total") == 0
    assert sample(metrics, "promptcache_cache_misses_total") == 0


# --------------------------------------------------------------------------- OpenAI
async def test_openai_direct_reads_nothing_from_cache(simulator_url: str) -> None:
    turns, unasked = await openai_app(simulator_url, simulator_url, AppClock())
    assert unasked == 0
    assert_stamps_distinct(turns)
    used = total([t.usage for t in turns])
    report("openai direct", [t.usage for t in turns])
    assert used.total_input > TURNS * 1_500
    assert used.cache_read <= 0.05 * used.total_input


async def test_openai_relocate_serves_the_conversation_from_cache(
    simulator_url: str, tap: Tap, sidecar_process: RunSidecar, tmp_path: Path
) -> None:
    policy = write_policy(
        tmp_path / "p.yaml", "e2e-openai", "{provider: openai, volatile: {action: relocate}}"
    )
    async with sidecar_process(sidecar_args(policy, tap.url)) as sidecar:
        turns, unasked = await openai_app(sidecar.url, simulator_url, AppClock())
        metrics = await settled_metrics(sidecar.admin_url, TURNS)
    usages = [t.usage for t in turns]
    later, _ = report("openai via sidecar (relocate)", usages)
    assert later >= 0.80
    assert unasked == 0, "the usage chunk the sidecar asked for reached the app"
    assert_stamps_distinct(turns)
    assert_timestamp_seen_once(tap.bodies, turns)
    keys = {body.get("prompt_cache_key") for body in tap.bodies}
    assert len(keys) == 1
    assert isinstance(keys.pop(), str)
    for body in tap.bodies:
        assert body["messages"][0] == {"role": "system", "content": STATIC}
        assert body["stream_options"] == {"include_usage": True}  # so it could count
    # The sidecar counted the usage the app never saw, exactly as the simulator billed it.
    counted, billed = sidecar_tokens(metrics), total(usages)
    assert counted == Usage(
        uncached=billed.uncached, cache_read=billed.cache_read, output=billed.output
    )
    assert billed.cache_write == 0
    assert billed.output > 0
