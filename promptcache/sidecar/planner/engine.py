"""The planner the proxy holds: dispatch by route, observe mode, per-process memory.

``Planner.plan`` is pure apart from the bounded state it keeps between requests: reuse
gaps per static prefix (for ``ttl: auto``), the last static part sent per policy (to say
*where* a prefix changed) and when each prefix was last served (to tell an expired entry
from a first write). Every table is an LRU capped at ``capacity`` entries; stored
static texts are capped at ``SNAPSHOT_CHARS`` each and ``SNAPSHOT_KEYS`` policies.

Not thread-safe: call it from the event loop, as the proxy does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from promptcache.models import ModelInfo
from promptcache.policy.schema import PolicySpec
from promptcache.pricing import model_info
from promptcache.sidecar.learner import Learner, Split
from promptcache.sidecar.planner.anthropic import plan_messages
from promptcache.sidecar.planner.common import Env
from promptcache.sidecar.planner.diagnose import MISS_TOLERANCE, diagnose, remember
from promptcache.sidecar.planner.guard import Guard, GuardNote, Source
from promptcache.sidecar.planner.lru import Lru
from promptcache.sidecar.planner.memo import Memos, dumps, identity
from promptcache.sidecar.planner.openai import plan_openai
from promptcache.sidecar.planner.ttl import TTL_SECONDS, ReuseTracker, choose_ttl
from promptcache.sidecar.planner.turns import conversation_of, role_of
from promptcache.sidecar.planner.types import (
    Breakpoint,
    Diagnostics,
    Expectation,
    MissReason,
    Plan,
    PlanRequest,
    PrefixChange,
    Ttl,
)
from promptcache.usage import Usage

logger = logging.getLogger("promptcache.planner")

SNAPSHOT_CHARS = 256 * 1024
SNAPSHOT_KEYS = 64


@dataclass(frozen=True, slots=True)
class _Snapshot:
    static_hash: str | None
    blocks: tuple[tuple[str, str], ...]


def first_difference(a: str, b: str) -> int:
    """Offset of the first character where ``a`` and ``b`` differ (or the shorter length)."""
    n = min(len(a), len(b))
    lo, step = 0, 4096
    while lo < n and a[lo : lo + step] == b[lo : lo + step]:
        lo += step
    if lo >= n:
        return n
    while lo < n and a[lo] == b[lo]:
        lo += 1
    return lo


def first_change(old: tuple[tuple[str, str], ...], new: list[tuple[str, str]]) -> PrefixChange:
    """Which block of the static part changed first, and where."""
    for i, (label, text) in enumerate(new):
        if i >= len(old) or old[i][0] != label:
            return PrefixChange(label, 0)
        if old[i][1] != text[:SNAPSHOT_CHARS]:
            return PrefixChange(label, first_difference(old[i][1], text))
    if len(old) > len(new):
        return PrefixChange(old[len(new)][0], 0)
    last = new[-1][0] if new else "system"
    return PrefixChange(last, SNAPSHOT_CHARS)


class Planner:
    """Plans requests and explains cache misses; one per process."""

    def __init__(
        self, *, capacity: int = 1024, learning: bool = True, observe: bool = False
    ) -> None:
        """``learning``: learn prompt templates where no policy pins the system prompt
        (``sidecar.learner``); ``observe``: plan and learn, but send requests unchanged
        (the sidecar's ``--mode observe``; a policy that sets its own ``mode`` wins)."""
        self._reuse = ReuseTracker(capacity)
        self._snapshots: Lru[str, _Snapshot] = Lru(min(capacity, SNAPSHOT_KEYS))
        self._served: Lru[str, float] = Lru(capacity)
        self.memo = Memos()
        self.learner = Learner() if learning else None
        self.guard = Guard(capacity)
        self.observe = observe

    def plan(self, request: PlanRequest, *, settle: bool = True) -> Plan:
        """Plan one request; raises on input it cannot plan (the proxy then forwards it).

        ``settle=False``: what only the outcome needs (breakpoints, expected tokens,
        diagnostics) is left to ``Plan.settle``; the proxy settles when it records.
        """
        policy = request.policy
        body = request.body
        provider = request.provider
        raw_model = body.get("model")
        model = raw_model if isinstance(raw_model, str) else None
        info = model_info(provider, model, policy.pricing if policy is not None else None)
        minimum = (
            policy.min_cacheable_tokens
            if policy is not None and policy.min_cacheable_tokens
            else info.min_cacheable_tokens
        )
        ttl_notes: list[str] = []

        def auto_ttl(fp: str) -> Ttl:
            choice = choose_ttl(self._reuse.observe(fp, request.now), info)
            ttl_notes.append(
                f"ttl auto: {choice.ttl} (cost per use 5m {choice.cost_5m:.2f}x, "
                f"1h {choice.cost_1h:.2f}x over {choice.samples} gaps)"
            )
            return choice.ttl

        observe = _observing(policy, self.observe)
        base_key = (
            (request.policy_name or "policy")
            if policy is not None
            else f"none:{request.route}:{(model or '')[:64]}"
        )
        learner = self.learner

        def learn(text: str, tools: str, newest: int | None) -> Split | None:
            assert learner is not None
            partition = (request.route, (model or "")[:64], tools)
            previous, current = conversation_turn(body)
            return learner.observe(partition, text, current, previous, newest)

        env = Env(
            policy=policy,
            policy_name=request.policy_name if policy is not None else None,
            context=request.context,
            info=info,
            min_tokens=minimum,
            detector=self.memo.detector(policy.volatile) if policy is not None else None,
            auto_ttl=auto_ttl,
            memo=self.memo,
            provider=provider,
            learn=learn if learner is not None else None,
            learn_tools=(
                (lambda names: learner.tool_order((request.route, (model or "")[:64]), names))
                if learner is not None
                else None
            ),
            guard=self.guard,
            base_key=base_key,
            now=request.now,
            observe=observe,
        )
        if request.route == "messages":
            plan, snapshot = plan_messages(body, env, request.now)
        else:
            plan, snapshot = plan_openai(body, env, request.now, request.route)
        plan.notes.extend(ttl_notes)
        plan.key = key = env.plan_key
        plan.learned = env.learned
        change = None
        if observe:
            plan.body = body
            plan.changed = False
            plan.observe_only = True
        else:
            change = self._compare(key, plan.static_hash, snapshot)
            if change is not None:
                plan.notes.append(
                    f"static part differs from the previous request: {change.block} at "
                    f"offset {change.offset}"
                )
        template = env.learned.template if env.learned is not None else None
        made = plan.pending
        assert made is not None  # both dialects leave their expectation to settle
        plan.pending = partial(
            _expectation, made, key, env.policy_name, env.source, info, template, change
        )
        return plan.settle() if settle else plan

    def _compare(
        self, key: str, static_hash: str | None, snapshot: list[tuple[str, str]]
    ) -> PrefixChange | None:
        prev = self._snapshots.get(key)
        if prev is not None and prev.static_hash == static_hash:
            return None
        blocks = tuple((label, text[:SNAPSHOT_CHARS]) for label, text in snapshot)
        self._snapshots.put(key, _Snapshot(static_hash, blocks))
        if prev is None:
            return None
        return first_change(prev.blocks, snapshot)

    def record_outcome(self, plan: Plan, usage: Usage, now: float) -> MissReason | None:
        """Why fewer tokens than expected were read from cache, or ``None``.

        Observe-mode plans return ``None``: their expectation describes a request that
        was not sent.
        """
        d = plan.settle().diagnostics
        if d is None or plan.observe_only:
            return None
        if d.guard is not None:
            self._judge(d, d.guard, usage, now)
        if d.template is not None and self.learner is not None:
            self.learner.record(
                d.template,
                expected=plan.expected_cached_tokens,
                read=usage.cache_read,
                total_input=usage.total_input,
            )
        reason = diagnose(d, plan.expected_cached_tokens, usage, self._served)
        remember(d, usage, self._served, now)
        if reason == "prefix_changed" and d.prefix_change is not None:
            logger.info(
                "cache miss: prefix changed for %s: block %s differs at offset %d",
                plan.key,
                d.prefix_change.block,
                d.prefix_change.offset,
            )
        return reason

    def _judge(self, d: Diagnostics, note: GuardNote, usage: Usage, now: float) -> None:
        """Feed the guard one outcome: which tier's marker wrote or read what.

        The provider reports one total per request; the static prefix is served first,
        so a read of (about) its expected size is the static entry's, and what was
        written or read beyond it belongs to the history marker.
        """
        guard = self.guard
        guard.expire(now)
        if not note.tiers:
            return
        expected = d.static_expected_tokens
        read, written = usage.cache_read, usage.cache_write
        static_read = expected > 0 and read >= expected * MISS_TOLERANCE
        static_written = 0
        if "static" in note.tiers and d.static_fp is not None:
            if static_read:
                guard.read(note, "static", d.static_fp, min(read, expected), now)
            elif written:
                static_written = min(written, expected) if expected else written
                guard.wrote(note, "static", d.static_fp, static_written, now)
        if "history" in note.tiers:
            history_written = written - static_written
            if history_written > 0 and d.history_write_fp is not None:
                guard.wrote(note, "history", d.history_write_fp, history_written, now)
            history_read = read - (min(read, expected) if static_read else 0)
            if history_read > 0 and d.history_read_fp is not None:
                guard.read(note, "history", d.history_read_fp, history_read, now)


def _observing(policy: PolicySpec | None, sidecar_observe: bool) -> bool:
    """Observe mode: the policy's own ``mode`` when it sets one, else the sidecar's."""
    if policy is not None and ("mode" in policy.model_fields_set or not sidecar_observe):
        return policy.mode == "observe"
    return sidecar_observe


def _expectation(
    made: Callable[[], Expectation],
    key: str,
    policy: str | None,
    source: Source,
    info: ModelInfo,
    template: str | None,
    change: PrefixChange | None,
) -> Expectation:
    """The dialect's expectation, with what the engine knows added to its diagnostics."""
    breakpoints, expected, d = made()
    if d is not None:
        d.guard = _guard_note(key, policy, source, breakpoints, info)
        d.template = template
        d.prefix_change = change
    return breakpoints, expected, d


def _guard_note(
    key: str,
    policy: str | None,
    source: Source,
    breakpoints: list[Breakpoint],
    info: ModelInfo,
) -> GuardNote:
    tiers = sorted(
        {
            "history" if b.tier in ("history", "client") else "static"
            for b in breakpoints
            if b.placed_by == "planner"
        }
    )
    one_hour = any(b.ttl == "1h" for b in breakpoints if b.placed_by == "planner")
    return GuardNote(
        key=key,
        policy=policy,
        source=source,
        tiers=tuple(tiers),
        write_multiplier=info.write_1h_multiplier if one_hour else info.write_5m_multiplier,
        read_multiplier=info.read_multiplier,
        ttl_seconds=TTL_SECONDS["1h" if one_hour else "5m"],
    )


def conversation_turn(body: dict[str, Any]) -> tuple[int | None, int | None]:
    """Identity of the request's conversation as its previous turn left it, and as this
    turn leaves it (in-process hashes; ``None``: no such turn).

    A turn is named by the conversation's first user message and its newest one (with its
    position): apps open many conversations with the same first message ("Hi"), but two
    of them rarely also agree on the newest. The next turn finds this one by its own
    previous user message.
    """
    messages, string_input = conversation_of(body)
    if string_input is not None:
        return None, hash(string_input)
    users = [i for i, m in enumerate(messages) if role_of(m) == "user"]
    if not users:
        return None, None
    base = _content_hash(messages[users[0]])
    k = users[-1]
    current = hash((base, k, _content_hash(messages[k])))
    if len(users) == 1:
        return None, current
    prev = users[-2]
    return hash((base, prev, _content_hash(messages[prev]))), current


def _content_hash(message: Any) -> int:
    content = message.get("content")
    if type(content) is str:
        return hash(content)  # str caches its hash: one pass over the text per request
    key = identity(content)
    return hash(key if key is not None else dumps(content))
