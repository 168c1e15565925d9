"""The planner the proxy holds: dispatch by route, observe mode, per-process memory.

``Planner.plan`` is pure apart from the bounded state it keeps between requests: reuse
gaps per static prefix (for ``ttl: auto``), the last static part sent per policy (to say
*where* a prefix changed) and when each prefix was last served (to tell an expired entry
from a first write). Every table is an LRU capped at ``capacity`` entries; stored
static texts are capped at ``SNAPSHOT_CHARS`` each and ``SNAPSHOT_KEYS`` policies.

Not thread-safe: call it from the event loop, as the proxy does.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from promptcache.pricing import model_info
from promptcache.sidecar.planner.anthropic import plan_messages
from promptcache.sidecar.planner.common import Env
from promptcache.sidecar.planner.diagnose import diagnose, remember
from promptcache.sidecar.planner.lru import Lru
from promptcache.sidecar.planner.memo import Memos
from promptcache.sidecar.planner.openai import plan_openai
from promptcache.sidecar.planner.ttl import ReuseTracker, choose_ttl
from promptcache.sidecar.planner.types import MissReason, Plan, PlanRequest, PrefixChange, Ttl
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

    def __init__(self, *, capacity: int = 1024) -> None:
        self._reuse = ReuseTracker(capacity)
        self._snapshots: Lru[str, _Snapshot] = Lru(min(capacity, SNAPSHOT_KEYS))
        self._served: Lru[str, float] = Lru(capacity)
        self.memo = Memos()

    def plan(self, request: PlanRequest) -> Plan:
        """Plan one request; raises on input it cannot plan (the proxy then forwards it)."""
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

        env = Env(
            policy=policy,
            policy_name=request.policy_name if policy is not None else None,
            context=request.context,
            info=info,
            min_tokens=minimum,
            detector=self.memo.detector(policy.volatile) if policy is not None else None,
            auto_ttl=auto_ttl,
            memo=self.memo,
            openai_compatible=provider == "openai-compatible",
        )
        if request.route == "messages":
            plan, snapshot = plan_messages(body, env, request.now)
        else:
            plan, snapshot = plan_openai(body, env, request.now, request.route)
        plan.notes.extend(ttl_notes)
        plan.key = (
            (request.policy_name or "policy")
            if policy is not None
            else f"none:{request.route}:{(model or '')[:64]}"
        )
        if policy is not None and policy.mode == "observe":
            plan.body = body
            plan.changed = False
            plan.observe_only = True
            return plan
        change = self._compare(plan.key, plan.static_hash, snapshot)
        if change is not None and plan.diagnostics is not None:
            plan.diagnostics = dataclasses.replace(plan.diagnostics, prefix_change=change)
            plan.notes.append(
                f"static part differs from the previous request: {change.block} at offset "
                f"{change.offset}"
            )
        return plan

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
        d = plan.diagnostics
        if d is None or plan.observe_only:
            return None
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
