"""Context prefetch through the real sidecar: the fetched context lands after the cached
prefix, so requests that differ only in their context still read the prefix from cache.

The app is the official SDK pointed at the sidecar; the context comes from real HTTP
services on loopback; upstream is the provider simulator (for cache behaviour) or the
recording fake (to look at the bytes that went out).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import yaml

from promptcache.sidecar.planner import MissReason, Plan, Planner, PlanRequest
from promptcache.simulator import SimConfig, SimServer
from promptcache.usage import Usage
from tests.local.conftest import FakeUpstream, StartSidecar
from tests.local.context_services import ContextService

MODEL = "claude-sonnet-4-6"  # minimum cacheable prefix 1,024 tokens (models.yaml)
STATIC = "You are the support agent of Example Shop. Follow the refund policy exactly. " * 120
"""About 2,300 tokens of unchanging instructions (the ~4 characters per token rule)."""
POLICY = "support-agent"


@pytest.fixture
async def context_service() -> AsyncIterator[ContextService]:
    async with ContextService.running(delay=0.05) as svc:
        yield svc


def write_policy(
    tmp_path: Path,
    service: ContextService,
    *,
    provider: str = "anthropic",
    orders_path: str = "/text/orders-of-{user_id}",
    required: bool = False,
) -> Path:
    field = "metadata.user_id" if provider == "anthropic" else "user"
    spec: dict[str, Any] = {
        "provider": provider,
        "staticBlocks": [{"name": "instructions", "content": STATIC}],
        "contextVariables": [{"name": "user_id", "from": "field", "field": field}],
        "contextSources": [
            {"name": "orders", "url": service.base_url + orders_path, "required": required},
            {"name": "profile", "url": service.base_url + "/text/profile-of-{user_id}"},
        ],
        "contextDeadline": "2s",
    }
    return write_document(tmp_path / f"{POLICY}.yaml", spec)


def write_document(path: Path, spec: dict[str, Any]) -> Path:
    """A policy file: the PromptPolicy named ``POLICY`` with ``spec``."""
    document = {
        "apiVersion": "promptcache.io/v1alpha1",
        "kind": "PromptPolicy",
        "metadata": {"name": POLICY},
        "spec": spec,
    }
    path.write_text(yaml.safe_dump(document))
    return path


def anthropic_blocks(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Every block in cache-prefix order: tools, then system, then message content."""
    blocks: list[dict[str, Any]] = list(body.get("tools") or [])
    system = body.get("system") or []
    blocks += [{"type": "text", "text": system}] if isinstance(system, str) else system
    for message in body["messages"]:
        content = message["content"]
        blocks += [{"type": "text", "text": content}] if isinstance(content, str) else content
    return blocks


async def test_anthropic_context_lands_after_the_cached_prefix(
    tmp_path: Path,
    start_sidecar: StartSidecar,
    fake_upstream: FakeUpstream,
    context_service: ContextService,
) -> None:
    sidecar = await start_sidecar(policy=write_policy(tmp_path, context_service))
    async with anthropic.AsyncAnthropic(
        base_url=sidecar.url, api_key="sk-test", max_retries=0
    ) as client:
        for user in ("alice", "bob"):
            await client.messages.create(
                model=MODEL,
                max_tokens=64,
                metadata={"user_id": user},
                messages=[{"role": "user", "content": "Where is my order?"}],
            )
    alice, bob = (json.loads(r.body) for r in fake_upstream.requests)
    assert alice["system"] == bob["system"]  # the cached prefix is byte-identical
    assert "<context" not in json.dumps(alice["system"])
    for body, user in ((alice, "alice"), (bob, "bob")):
        blocks = anthropic_blocks(body)
        at = next(i for i, b in enumerate(blocks) if "<context" in b.get("text", ""))
        text = blocks[at]["text"]
        assert f"orders-of-{user} context (GET)" in text
        assert f"profile-of-{user} context (GET)" in text
        assert text.index('name="orders"') < text.index('name="profile"')
        marked = [i for i, b in enumerate(blocks) if "cache_control" in b]
        assert marked, "the sidecar placed no breakpoint"
        assert max(marked) < at, "a breakpoint sits after (or on) the context block"
        assert blocks[-1]["text"] == "Where is my order?"
    for source in ("orders", "profile"):
        assert (
            sidecar.metric(
                "promptcache_context_fetch_duration_seconds_count", policy=POLICY, source=source
            )
            == 2
        )
    spans = sidecar.finished_spans()
    fetches = [s for s in spans if s.name.startswith("context.fetch ")]
    assert (
        sorted(s.name for s in fetches)
        == ["context.fetch orders"] * 2 + ["context.fetch profile"] * 2
    )
    parents = {s.context.span_id: s for s in spans if s.context is not None}
    for span in fetches:
        assert span.parent is not None
        parent = parents[span.parent.span_id]
        assert not parent.name.startswith("context.fetch")
        assert span.context is not None
        assert parent.context is not None
        assert span.context.trace_id == parent.context.trace_id


async def test_context_that_differs_per_user_keeps_the_prefix_cached(
    tmp_path: Path, start_sidecar: StartSidecar, context_service: ContextService
) -> None:
    async with SimServer(SimConfig(time_scale=0)) as sim:
        sidecar = await start_sidecar(
            anthropic_upstream=sim.url, policy=write_policy(tmp_path, context_service)
        )
        async with anthropic.AsyncAnthropic(
            base_url=sidecar.url, api_key="sk-test", max_retries=0
        ) as client:
            usages = []
            for user in ("alice", "bob", "carol"):
                reply = await client.messages.create(
                    model=MODEL,
                    max_tokens=32,
                    metadata={"user_id": user},
                    messages=[{"role": "user", "content": "Where is my order?"}],
                )
                usages.append(reply.usage)
    static_tokens = len(STATIC) // 4
    first, *later = usages
    assert (first.cache_creation_input_tokens or 0) >= static_tokens
    for usage in later:
        read = usage.cache_read_input_tokens or 0
        total = usage.input_tokens + read + (usage.cache_creation_input_tokens or 0)
        assert read >= static_tokens
        assert read / total > 0.9, usage


async def test_the_same_context_inside_the_prefix_would_miss() -> None:
    """The contrast: the app marking its system prompt with the per-user context inside
    it (what the sidecar avoids) writes a new cache entry for every user."""
    async with (
        SimServer(SimConfig(time_scale=0)) as sim,
        anthropic.AsyncAnthropic(base_url=sim.url, api_key="sk-test", max_retries=0) as client,
    ):
        reads = []
        for user in ("alice", "bob", "carol"):
            reply = await client.messages.create(
                model=MODEL,
                max_tokens=32,
                system=[
                    {"type": "text", "text": STATIC},
                    {
                        "type": "text",
                        "text": f"orders-of-{user} context (GET)",
                        "cache_control": {"type": "ephemeral"},
                    },
                ],
                messages=[{"role": "user", "content": "Where is my order?"}],
            )
            reads.append(reply.usage.cache_read_input_tokens or 0)
    assert reads == [0, 0, 0]


async def test_openai_context_lands_after_the_static_system(
    tmp_path: Path,
    start_sidecar: StartSidecar,
    fake_upstream: FakeUpstream,
    context_service: ContextService,
) -> None:
    policy = write_policy(tmp_path, context_service, provider="openai")
    sidecar = await start_sidecar(policy=policy)
    async with openai.AsyncOpenAI(
        base_url=sidecar.openai_url, api_key="sk-test", max_retries=0
    ) as client:
        for user in ("alice", "bob"):
            await client.chat.completions.create(
                model="gpt-4o-mini",
                user=user,
                messages=[{"role": "user", "content": "Where is my order?"}],
            )
    alice, bob = (json.loads(r.body) for r in fake_upstream.requests)
    rendered = [[json.dumps(m, sort_keys=True) for m in b["messages"]] for b in (alice, bob)]
    first_context = [next(i for i, m in enumerate(msgs) if "<context" in m) for msgs in rendered]
    assert first_context[0] == first_context[1] > 0
    prefix = first_context[0]
    assert rendered[0][:prefix] == rendered[1][:prefix]  # the prefix OpenAI caches
    assert STATIC.strip() in "".join(rendered[0][:prefix])
    assert "orders-of-alice" in rendered[0][prefix]
    assert "orders-of-bob" in rendered[1][prefix]
    assert "Where is my order?" in rendered[0][-1]


async def test_required_source_failure_is_a_provider_error_naming_it(
    tmp_path: Path,
    start_sidecar: StartSidecar,
    fake_upstream: FakeUpstream,
    context_service: ContextService,
) -> None:
    policy = write_policy(tmp_path, context_service, orders_path="/status/404", required=True)
    sidecar = await start_sidecar(policy=policy)
    async with anthropic.AsyncAnthropic(
        base_url=sidecar.url, api_key="sk-test", max_retries=0
    ) as client:
        with pytest.raises(anthropic.APIStatusError) as info:
            await client.messages.create(
                model=MODEL,
                max_tokens=32,
                metadata={"user_id": "alice"},
                messages=[{"role": "user", "content": "Where is my order?"}],
            )
    assert info.value.status_code == 502
    assert "orders" in info.value.message
    assert fake_upstream.requests == []
    assert (
        sidecar.metric(
            "promptcache_context_fetch_failures_total",
            policy=POLICY,
            source="orders",
            reason="status",
        )
        == 1
    )


async def test_optional_source_failure_becomes_a_placeholder(
    tmp_path: Path,
    start_sidecar: StartSidecar,
    fake_upstream: FakeUpstream,
    context_service: ContextService,
) -> None:
    policy = write_policy(tmp_path, context_service, orders_path="/status/503")
    sidecar = await start_sidecar(policy=policy)
    async with anthropic.AsyncAnthropic(
        base_url=sidecar.url, api_key="sk-test", max_retries=0
    ) as client:
        await client.messages.create(
            model=MODEL,
            max_tokens=32,
            metadata={"user_id": "alice"},
            messages=[{"role": "user", "content": "Where is my order?"}],
        )
    (sent,) = fake_upstream.requests
    text = json.dumps(json.loads(sent.body)["messages"])
    assert "[context unavailable: status]" in text
    assert "profile-of-alice context (GET)" in text


async def test_retrieval_by_the_users_question_through_the_sidecar(
    tmp_path: Path,
    start_sidecar: StartSidecar,
    fake_upstream: FakeUpstream,
    context_service: ContextService,
) -> None:
    """A POST source searching with the newest question (``from: message``), as the case
    study's retriever did, fed by the OpenAI SDK's request."""
    spec: dict[str, Any] = {
        "provider": "openai",
        "staticBlocks": [{"name": "instructions", "content": STATIC}],
        "contextVariables": [{"name": "question", "from": "message"}],
        "contextSources": [
            {
                "name": "docs",
                "method": "POST",
                "url": context_service.base_url + "/search",
                "body": {"query": "{question}", "k": 3},
            }
        ],
    }
    sidecar = await start_sidecar(policy=write_document(tmp_path / "retrieval.yaml", spec))
    question = "Can I return a worn tent?"
    async with openai.AsyncOpenAI(
        base_url=sidecar.url + "/v1", api_key="sk-test", max_retries=0
    ) as client:
        await client.chat.completions.create(
            model="gpt-4o",
            messages=[
                {"role": "user", "content": "Hello"},
                {"role": "assistant", "content": "Hi, how can I help?"},
                {"role": "user", "content": question},
            ],
        )
    (sent,) = fake_upstream.requests
    messages = json.loads(sent.body)["messages"]
    newest = messages[-1]["content"]
    assert isinstance(newest, str)
    head, sep, rest = newest.partition('<context name="docs">\n')
    assert sep
    assert not head
    found, _, after = rest.partition("\n</context>")
    assert json.loads(found) == {
        "content_type": "application/json",
        "json": {"query": question, "k": 3},
    }
    assert after.strip() == question
    assert context_service.hits["search"] == 1


# ------------------------------------------------ the hook: blocks reach the planner
class SpyPlanner(Planner):
    """Passes requests through and remembers what it was given."""

    def __init__(self) -> None:
        self.requests: list[PlanRequest] = []
        self.outcomes: list[Usage] = []

    def plan(self, request: PlanRequest, *, settle: bool = True) -> Plan:
        self.requests.append(request)
        return Plan(body=request.body, model=request.body.get("model"))

    def record_outcome(self, plan: Plan, usage: Usage, now: float) -> MissReason | None:
        self.outcomes.append(usage)
        return "first_write"


def _hook_policy(path: Path, base: str, *, required: str) -> Path:
    path.write_text(
        "kind: PromptPolicy\n"
        "metadata: {name: support}\n"
        "spec:\n"
        "  provider: anthropic\n"
        "  contextDeadline: 2s\n"
        "  contextSources:\n"
        f"    - {{name: orders, url: '{base}/text/orders', timeout: 1s}}\n"
        f"    - {{name: profile, url: '{base}/status/500', required: {required}}}\n"
    )
    return path


async def _hook_call(url: str) -> anthropic.types.Message:
    async with anthropic.AsyncAnthropic(api_key="k", base_url=url, max_retries=0) as client:
        return await client.messages.create(
            model="claude-sonnet-4-6", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )


async def test_context_blocks_reach_the_planner_and_misses_are_counted(
    start_sidecar: StartSidecar, fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    spy = SpyPlanner()
    async with ContextService.running() as service:
        policy = _hook_policy(tmp_path / "p.yaml", service.base_url, required="false")
        sc = await start_sidecar(planner=spy, policy=policy)
        await _hook_call(sc.url)
    (request,) = spy.requests
    assert request.policy_name == "support"
    names = [block.name for block in request.context]
    assert names == ["orders", "profile"]
    assert request.context[0].text == "orders context (GET)"
    assert spy.outcomes == [Usage(uncached=120, cache_read=3500, output=12)]
    assert sc.metric("promptcache_cache_misses_total", policy="support", reason="first_write") == 1
