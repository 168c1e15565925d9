"""Metrics of the learner and the never-worse guard, read from the planner at scrape time.

The planner is pure and keeps its own counts; this collector turns them into samples
when Prometheus scrapes, so the request path does no metric work for them. Labels are
bounded: the policy name (or ``none``), the prefix's source (``policy``, ``learned``,
``default``), the tier (``static``, ``history``) and the guard's state. Learned
templates are never a label (their ids churn); ``/templates`` shows them one by one.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from promptcache.sidecar.metrics import NO_POLICY
from promptcache.sidecar.planner import Planner
from promptcache.sidecar.planner.guard import Guard

UNREAD = "promptcache_guard_unread_write_tokens"
TRACKS = "promptcache_guard_tracks"
TEMPLATES = "promptcache_learned_templates"
UNITS = "promptcache_learner_units"


class LearningCollector(Collector):
    """Samples of one planner's learner and guard."""

    def __init__(self, planner: Planner) -> None:
        self._planner = planner

    def describe(self) -> list[CounterMetricFamily | GaugeMetricFamily]:
        return list(self._families(None))

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        guard = getattr(self._planner, "guard", None)  # a test's stand-in planner has none
        yield from self._families(guard if isinstance(guard, Guard) else None)

    def _families(self, guard: Guard | None) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        unread = CounterMetricFamily(
            UNREAD,
            "Cache write tokens the planner's markers caused that were never read back "
            "(judged when later requests planned another prefix, or the TTL passed)",
            labels=["policy", "source"],
        )
        tracks = GaugeMetricFamily(
            TRACKS,
            "Breakpoint tracks (static prefix or history, per policy or learned template) "
            "by the never-worse guard's state",
            labels=["policy", "source", "tier", "state"],
        )
        if guard is not None:
            for (policy, source), tokens in sorted(
                guard.unread_tokens.items(), key=lambda kv: (kv[0][0] or "", kv[0][1])
            ):
                unread.add_metric([policy or NO_POLICY, source], tokens)
            for (policy, source, tier, state), count in sorted(
                guard.states().items(), key=lambda kv: tuple(x or "" for x in kv[0])
            ):
                tracks.add_metric([policy or NO_POLICY, source, tier, state], count)
        yield unread
        yield tracks
        learner = getattr(self._planner, "learner", None)
        templates = GaugeMetricFamily(
            TEMPLATES,
            "Prompt templates the learner holds: learned (applied) or candidate (seen once)",
            labels=["state"],
        )
        units = GaugeMetricFamily(
            UNITS, "Anchor hashes the learner holds in all templates (its memory bound)"
        )
        if learner is not None and guard is not None:
            templates.add_metric(["learned"], len(learner))
            templates.add_metric(["candidate"], learner.candidates)
            units.add_metric([], learner.units)
        yield templates
        yield units
