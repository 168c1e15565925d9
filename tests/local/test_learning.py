"""Zero configuration and never worse, with real processes: the sidecar learns each prompt
template from traffic, applies it, and withdraws breakpoints that do not pay.

Every test runs ``promptcache sidecar`` as a child process in front of ``promptcache
simulate`` (a caching stand-in for the providers), driven by the official SDKs. Costs
are the simulator's usage priced with the model table (``promptcache.pricing``); answers
are capped at ``MAX_TOKENS`` so both arms pay the same for output.
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from promptcache.demo.services import get_text
from promptcache.pricing import cost, model_info
from promptcache.sidecar.learner import MAX_CANDIDATES, MAX_TEMPLATES, MAX_UNITS
from promptcache.usage import Usage, from_anthropic, from_openai
from promptcache.wire import Provider
from tests.local.conftest import FakeUpstream, RunSidecar, StartSidecar

pytestmark = pytest.mark.timeout(180)

ANTHROPIC_MODEL = "claude-sonnet-4-6"
OPENAI_MODEL = "gpt-4o-mini"
MAX_TOKENS = 16
START = datetime(2026, 3, 2, 9, 30, 0, tzinfo=UTC)


def static_text(variant: str, chars: int = 6000) -> str:
    """Instructions that never change (``variant`` names a prompt version)."""
    rng = random.Random(variant)
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9))) for _ in range(400)]
    lines: list[str] = []
    size = 0
    n = 0
    while size < chars:
        line = f"{variant} rule {n}: " + " ".join(rng.choices(words, k=12)) + "."
        lines.append(line)
        size += len(line) + 1
        n += 1
    return "\n".join(lines)


def stamped(static: str, i: int) -> str:
    """The app's system prompt: the current time and a request id first, then ``static``."""
    now = START + timedelta(seconds=7 * i)
    request_id = f"req-{i:06d}-{i * 7919 % 100000:05d}"
    return f"Current time: {now.isoformat()}\nRequest ID: {request_id}\n\n{static}"


def unique_prompt(seed: str) -> str:
    """A system prompt that shares no line with any other."""
    rng = random.Random(seed)
    return "\n".join(
        " ".join("".join(rng.choices(string.ascii_lowercase, k=7)) for _ in range(12))
        for _ in range(60)
    )


class App:
    """The app: one official SDK client, single-turn questions, usage per request."""

    def __init__(self, base: str, route: str) -> None:
        self.route = route
        self.base = base
        self.usages: list[Usage] = []

    @property
    def provider(self) -> Provider:
        return "anthropic" if self.route == "messages" else "openai"

    @property
    def model(self) -> str:
        return ANTHROPIC_MODEL if self.route == "messages" else OPENAI_MODEL

    async def ask(self, system: str, question: str) -> Usage:
        if self.route == "messages":
            async with anthropic.AsyncAnthropic(
                api_key="k", base_url=self.base, max_retries=0
            ) as client:
                message = await client.messages.create(
                    model=ANTHROPIC_MODEL,
                    max_tokens=MAX_TOKENS,
                    system=system,
                    messages=[{"role": "user", "content": question}],
                )
                usage = from_anthropic(message.usage.model_dump())
        else:
            async with openai.AsyncOpenAI(
                api_key="k", base_url=self.base + "/v1", max_retries=0
            ) as oai:
                if self.route == "chat":
                    chat = await oai.chat.completions.create(
                        model=OPENAI_MODEL,
                        max_tokens=MAX_TOKENS,
                        messages=[
                            {"role": "system", "content": system},
                            {"role": "user", "content": question},
                        ],
                    )
                    assert chat.usage is not None
                    usage = from_openai(chat.usage.model_dump())
                else:
                    response = await oai.responses.create(
                        model=OPENAI_MODEL,
                        max_output_tokens=MAX_TOKENS,
                        instructions=system,
                        input=question,
                    )
                    assert response.usage is not None
                    usage = from_openai(response.usage.model_dump())
        self.usages.append(usage)
        return usage

    def cost(self, usages: Sequence[Usage] | None = None) -> float:
        info = model_info(self.provider, self.model, None)
        return sum(cost(u, info).total for u in (self.usages if usages is None else usages))


def args(upstream: str, *extra: str) -> list[str]:
    return ["--anthropic-upstream", upstream, "--openai-upstream", upstream, *extra]


async def templates(admin_url: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(await get_text(admin_url + "/templates"))
    return document


def write_policy(path: Path, spec: str) -> Path:
    path.write_text(f"kind: PromptPolicy\nmetadata: {{name: agent}}\nspec: {spec}\n", "utf-8")
    return path


# --------------------------------------------------------------------------- learning
@pytest.mark.parametrize("route", ["messages", "chat", "responses"])
async def test_no_policy_learns_a_timestamp_first_prompt_and_reads_from_the_third_request(
    route: str, simulator_url: str, sidecar_process: RunSidecar
) -> None:
    static = static_text("support")
    async with sidecar_process(args(simulator_url)) as sidecar:
        app = App(sidecar.url, route)
        for i in range(6):
            await app.ask(stamped(static, i), f"Question number {i}: where is my parcel?")
        shapes = await templates(sidecar.admin_url)
        metrics = await get_text(sidecar.admin_url + "/metrics")
    # Shapes only: no word of the prompt, the questions or the timestamps is shown.
    shown = json.dumps(shapes) + metrics
    for text in ("support rule", static.split()[3], "Current time", "req-0000", "parcel"):
        assert text not in shown
    reads = [u.cache_read for u in app.usages]
    print("cache reads per request:", reads)
    assert reads[0] == 0
    # Learned from two requests; from the third on, the static instructions are read.
    assert all(r >= 1024 for r in reads[2:]), reads
    learned = [t for t in shapes["templates"] if t["state"] == "learned"]
    assert len(learned) == 1
    kinds = [s["kind"] for s in learned[0]["spans"]]
    assert kinds[0] == "request"
    assert "stable" in kinds
    assert learned[0]["requests"] == 6


async def test_a_changed_template_is_relearned_and_nothing_fails(
    simulator_url: str, sidecar_process: RunSidecar
) -> None:
    async with sidecar_process(args(simulator_url)) as sidecar:
        app = App(sidecar.url, "messages")
        for i in range(4):
            await app.ask(stamped(static_text("v1"), i), f"v1 question {i}")
        for i in range(4, 9):
            await app.ask(stamped(static_text("v2"), i), f"v2 question {i}")
    reads = [u.cache_read for u in app.usages]
    print("cache reads per request:", reads)
    assert all(r >= 1024 for r in reads[2:4]), reads
    # The new version: seen once, learned on its second request, read from its third.
    assert reads[4] == 0
    assert reads[5] == 0
    assert all(r >= 1024 for r in reads[6:]), reads


async def test_eight_templates_survive_a_flood_of_unique_prompts_within_the_caps(
    simulator_url: str, sidecar_process: RunSidecar
) -> None:
    names = [f"prompt{n}" for n in range(8)]
    async with sidecar_process(args(simulator_url)) as sidecar:
        app = App(sidecar.url, "messages")
        for round_ in range(2):
            for n, name in enumerate(names):
                await app.ask(stamped(static_text(name, 4800), 8 * round_ + n), f"{name} {round_}")
        for i in range(3 * (MAX_TEMPLATES + MAX_CANDIDATES)):
            await app.ask(unique_prompt(f"flood-{i}"), "hello")
        during = await templates(sidecar.admin_url)
        after = []
        for n, name in enumerate(names):
            after.append(await app.ask(stamped(static_text(name, 4800), 100 + n), "again"))
        shapes = await templates(sidecar.admin_url)
    states = [t["state"] for t in during["templates"]]
    assert states.count("learned") <= MAX_TEMPLATES
    assert states.count("candidate") <= MAX_CANDIDATES
    assert during["units"] <= MAX_UNITS
    # Every one of the eight prompts is still learned: each reads its instructions.
    print("reads after the flood:", [u.cache_read for u in after])
    assert all(u.cache_read >= 1024 for u in after)
    assert sum(t["state"] == "learned" for t in shapes["templates"]) >= 8


def customer_prompt(static: str, i: int, customer: int) -> str:
    """A timestamp on top, the instructions, then a customer block (the same on every turn
    of one customer's conversation, unlabelled lines, ~600 tokens)."""
    rng = random.Random(customer)
    orders = "\n".join(
        f"- order NW-{rng.randint(10**6, 10**7)}: "
        + " ".join(rng.choices(["boots", "tent", "jacket", "stove", "pack"], k=20))
        for _ in range(16)
    )
    header = stamped("", i).strip()
    return f"{header}\n\n{static}\n<customer>\n{orders}\n</customer>"


async def converse(app: App, system_of: Any, turns: int) -> list[Usage]:
    """One multi-turn conversation through the official SDK: the app re-sends its history."""
    history: list[dict[str, str]] = []
    usages: list[Usage] = []
    for t in range(turns):
        history.append({"role": "user", "content": f"Turn {t}: what about my order?"})
        system = system_of(t)
        if app.route == "messages":
            async with anthropic.AsyncAnthropic(
                api_key="k", base_url=app.base, max_retries=0
            ) as client:
                message = await client.messages.create(
                    model=ANTHROPIC_MODEL,
                    max_tokens=MAX_TOKENS,
                    system=system,
                    messages=history,  # type: ignore[arg-type]
                )
                usage = from_anthropic(message.usage.model_dump())
                reply = "".join(b.text for b in message.content if b.type == "text")
        else:
            async with openai.AsyncOpenAI(
                api_key="k", base_url=app.base + "/v1", max_retries=0
            ) as oai:
                chat = await oai.chat.completions.create(
                    model=OPENAI_MODEL,
                    max_tokens=MAX_TOKENS,
                    messages=[{"role": "system", "content": system}, *history],  # type: ignore[list-item]
                )
                assert chat.usage is not None
                usage = from_openai(chat.usage.model_dump())
                reply = chat.choices[0].message.content or ""
        history.append({"role": "assistant", "content": reply or "ok"})
        usages.append(usage)
    return usages


@pytest.mark.parametrize("route", ["messages", "chat"])
async def test_per_conversation_text_is_pinned_into_the_history_and_read_from_the_third_turn(
    route: str, simulator_url: str, sidecar_process: RunSidecar
) -> None:
    static = static_text("pinned")
    async with sidecar_process(args(simulator_url)) as sidecar:
        app = App(sidecar.url, route)
        for c in range(2):  # two other customers' first turns: the template is learned
            await app.ask(customer_prompt(static, c, c), f"Hello from customer {c}")
        usages = await converse(app, lambda t: customer_prompt(static, 10 + t, 7), 5)
    uncached = [u.uncached for u in usages]
    reads = [u.cache_read for u in usages]
    print("uncached per turn:", uncached, "reads:", reads)
    # Nothing of this conversation was seen before its first turn, so the customer block
    # goes at the start of that turn's user message; on the second it came back unchanged
    # and stays there, in the history the app re-sends: from the third turn on it is read
    # from cache instead of being sent uncached behind the history on every turn.
    assert all(u < 300 for u in uncached[2:]), uncached
    assert all(r >= 1400 for r in reads[2:]), reads
    assert reads[4] > reads[1]


# --------------------------------------------------------------------------- never worse
async def test_the_guard_withdraws_a_breakpoint_that_is_never_read_and_retries_it(
    tmp_path: Path, simulator_url: str, sidecar_process: RunSidecar
) -> None:
    # Relocation forbidden: the whole system prompt, timestamp first, is the static prefix.
    policy = write_policy(tmp_path / "p.yaml", "{volatile: {action: report}}")
    static = static_text("guarded")
    async with sidecar_process(args(simulator_url, "--policy", str(policy))) as sidecar:
        app = App(sidecar.url, "messages")
        for i in range(20):
            await app.ask(stamped(static, i), f"question {i}")
        report = await templates(sidecar.admin_url)
        metrics = await get_text(sidecar.admin_url + "/metrics")
    writes = [u.cache_write for u in app.usages]
    print("cache writes per request:", writes)
    written = [i for i, w in enumerate(writes) if w]
    # Two writes judged unread withdraw the marker; one probe later, withdrawn again.
    assert written[:2] == [0, 1]
    assert 3 <= len(written) <= 4, written
    assert written[-1] >= 8, "the breakpoint was retried after its backoff"
    assert writes[2] == 0
    (track,) = [g for g in report["guard"] if g["tier"] == "static"]
    assert track["state"] == "withdrawn"
    assert track["withdrawals"] >= 2
    assert track["unreadWriteTokens"] >= 2 * 1024
    assert 'promptcache_guard_tracks{policy="agent",source="policy",state="withdrawn"' in (
        metrics.replace(',tier="static"', "")
    )
    assert "promptcache_guard_unread_write_tokens_total" in metrics


@pytest.mark.parametrize(
    ("name", "flags", "env", "policy"),
    [
        ("learning", [], {}, None),
        ("no learning", [], {"PROMPTCACHE_LEARNING": "false"}, None),
        ("policy, whole system static", [], {}, "{volatile: {action: report}}"),
    ],
)
async def test_prompts_that_never_repeat_cost_at_most_5_percent_more_than_direct(
    name: str,
    flags: list[str],
    env: dict[str, str],
    policy: str | None,
    tmp_path: Path,
    simulator_url: str,
    sidecar_process: RunSidecar,
) -> None:
    direct = App(simulator_url, "messages")
    for i in range(20):
        await direct.ask(unique_prompt(f"direct-{i}"), f"question {i}")
    extra = ["--policy", str(write_policy(tmp_path / "p.yaml", policy))] if policy else []
    async with sidecar_process(args(simulator_url, *flags, *extra), env) as sidecar:
        through = App(sidecar.url, "messages")
        for i in range(20):
            await through.ask(unique_prompt(f"sidecar-{i}"), f"question {i}")
    ratio = through.cost() / direct.cost()
    print(f"{name}: cost through the sidecar / direct = {ratio:.4f}")
    assert ratio <= 1.05
    # Once the guard has acted, nothing is written but the guard's one probe.
    late = [u.cache_write for u in through.usages[2:]]
    assert sum(1 for w in late if w) <= 1, late


@pytest.mark.parametrize("how", ["observe mode", "policy forbids relocation"])
async def test_a_timestamp_on_top_without_relocation_costs_at_most_5_percent_more(
    how: str, tmp_path: Path, simulator_url: str, sidecar_process: RunSidecar
) -> None:
    static = static_text("ts-top")
    direct = App(simulator_url, "messages")
    for i in range(20):
        await direct.ask(stamped(static, i), f"question {i}")
    extra = (
        ["--mode", "observe"]
        if how == "observe mode"
        else ["--policy", str(write_policy(tmp_path / "p.yaml", "{volatile: {action: report}}"))]
    )
    async with sidecar_process(args(simulator_url, *extra)) as sidecar:
        through = App(sidecar.url, "messages")
        for i in range(20, 40):
            await through.ask(stamped(static, i), f"question {i - 20}")
    ratio = through.cost() / direct.cost()
    print(f"{how}: cost through the sidecar / direct = {ratio:.4f}")
    assert ratio <= 1.05
    late = [u.cache_write for u in through.usages[3:]]
    assert sum(1 for w in late if w) <= 1, late  # at most the guard's one probe


# --------------------------------------------------------------------------- observe
@pytest.mark.parametrize("route", ["messages", "chat", "responses"])
async def test_observe_mode_learns_but_sends_every_body_byte_identical(
    route: str, fake_upstream: FakeUpstream, start_sidecar: StartSidecar
) -> None:
    static = static_text("observed")
    direct = App(fake_upstream.url, route)
    observed = await start_sidecar(mode="observe")
    through = App(observed.url, route)
    for i in range(5):
        await direct.ask(stamped(static, i), f"question {i}")
        await through.ask(stamped(static, i), f"question {i}")
    sent = [r.body for r in fake_upstream.requests]
    assert sent[0::2] == sent[1::2]  # direct and through the sidecar, pair by pair
    learned = [t for t in (await templates(observed.admin_url))["templates"]]
    assert learned[0]["state"] == "learned"
    assert learned[0]["requests"] == 5
    # The same traffic in apply mode is rewritten from the second request on.
    applying = await start_sidecar()
    fake_upstream.requests.clear()
    rewritten = App(applying.url, route)
    for i in range(3):
        await direct.ask(stamped(static, i), f"question {i}")
        await rewritten.ask(stamped(static, i), f"question {i}")
    sent = [r.body for r in fake_upstream.requests]
    assert sent[0] == sent[1]
    assert sent[2] != sent[3]
    assert sent[4] != sent[5]
