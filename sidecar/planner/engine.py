"""Planner entry point (interim: forwards requests unchanged until the rules land)."""

from __future__ import annotations

from sidecar.planner.types import MissReason, Plan, PlanRequest
from promptcache.usage import Usage


class Planner:
    """Holds the per-process state planning needs (reuse gaps, last static prefix)."""

    def plan(self, request: PlanRequest) -> Plan:
        return Plan(body=request.body, model=request.body.get("model"))

    def record_outcome(self, plan: Plan, usage: Usage, now: float) -> MissReason | None:
        return None
