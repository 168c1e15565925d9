"""The learner: which template a request's system prompt belongs to, learned from traffic.

Each request's system text is cut into units and compared, by hash, with the templates
of its *partition* (route, model and tool list: a router and an answerer rarely share
all three). A template matches when the request holds, in order, at least half of the
template's anchor text (``MATCH_SHARE``). Then:

- no match: the request starts a *candidate* template (all its units anchors). A
  candidate is never applied: a prompt seen once may never come back, and caching it
  would only pay the write premium.
- first, the partition's recently used templates are tried by substring search of their
  stable stretches (``Template.fit``): a request that holds them in order, with changing
  text only where the template has gaps, costs a few ``str.find`` calls and the unit
  cuts of the gap text alone. Only other requests are cut into units and compared.
- a match: the template learns from the request (``template.Template.learn``: anchors
  missing from it become gaps; each gap's kind from the conversations seen) and the
  request's ``Split`` is returned; from the second request of a prompt on, the planner
  applies it. A new prompt version stops matching and is learned afresh, as a candidate
  then a template, within two requests; the old one ages out.

Bounded: at most ``max_templates`` learned templates and ``max_candidates`` candidates,
least recently used first out, and ``max_units`` anchors in all (each an 8-byte hash
and a length, plus an index entry; no prompt text is held). A flood of unique prompts
only churns the candidates: learned templates are evicted by other learned templates.

Pure and single-threaded: the planner calls it from the event loop.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

from promptcache.sidecar.learner.template import GapKind, Split, Template, Turn
from promptcache.sidecar.learner.units import Units, split_units

MAX_TEMPLATES = 32
"""Learned templates kept per sidecar (an app has a few prompts; 8 at once is the floor)."""
MAX_CANDIDATES = 32
"""Prompts seen once, kept to be recognised the second time."""
MAX_UNITS = 32_768
"""Anchors (unit hashes) held in all templates together: about 4 MB with the index."""
TOOL_LISTS = 64
"""Tool lists (by their set of names) whose order the learner remembers."""
RECENT = 4
"""Templates per partition tried first by the fast path."""
MATCH_SHARE = 0.5
"""Share of a template's anchor text a request must hold (in order) to be of it."""

Partition = tuple[str, str, str]
"""(route, model, tool-list digest)."""


@dataclass(frozen=True, slots=True)
class SpanShape:
    """One stretch of a template, by shape only."""

    kind: GapKind | str
    """``stable``, ``conversation`` or ``request``."""
    chars: int


@dataclass(frozen=True, slots=True)
class TemplateShape:
    """What ``promptcache explain`` and the admin endpoint show of a template: no text."""

    id: str
    route: str
    model: str
    state: str
    """``candidate`` (seen once) or ``learned``."""
    samples: int
    version: int
    spans: tuple[SpanShape, ...]
    predicted_hit_rate: float | None
    """Cached tokens the plans expected / their input tokens (None before any outcome)."""
    measured_hit_rate: float | None
    """Cached tokens read / input tokens, as the provider reported."""


class Learner:
    """Templates of one sidecar's traffic (see the module docstring)."""

    def __init__(
        self,
        *,
        max_templates: int = MAX_TEMPLATES,
        max_candidates: int = MAX_CANDIDATES,
        max_units: int = MAX_UNITS,
    ) -> None:
        self.max_templates = max_templates
        self.max_candidates = max_candidates
        self.max_units = max_units
        self._learned: OrderedDict[str, Template] = OrderedDict()
        self._candidates: OrderedDict[str, Template] = OrderedDict()
        self._partition: dict[str, Partition] = {}
        self._index: dict[int, set[str]] = {}
        self._weights: dict[str, dict[int, int]] = {}
        self._units = 0
        self._serial = 0
        self._tool_orders: dict[tuple[tuple[str, str], int], tuple[tuple[str, ...], bool]] = {}
        """Per (route, model, set of tool names): the order first seen, and whether the
        app has sent another since."""
        self._recent: dict[Partition, list[str]] = {}
        """Per partition, the templates used last (tried first, by ``Template.fit``)."""

    # ------------------------------------------------------------------ learning
    def observe(
        self,
        partition: Partition,
        text: str,
        conversation: int | None,
        previous: int | None = None,
        newest: int | None = None,
    ) -> Split | None:
        """Learn from one request's system ``text``; its split once the template is learned.

        ``conversation`` identifies the request's conversation as this turn leaves it,
        ``previous`` as its previous turn left it (``None`` when they have none: see
        ``planner.engine.conversation_turn``); ``newest`` is the index of its newest user
        message that text may be pinned into (``None``: pin nothing).
        """
        turn = Turn(conversation, previous, newest)
        if not text.strip():
            return None
        for tid in self._recent.get(partition, ()):
            known = self._learned.get(tid)
            if known is None:
                continue
            fast = known.fit(text, turn)
            if fast is not None:
                self._touch(known, partition)
                return None if known.fragmented else fast
        units = split_units(text)
        positions: dict[int, list[int]] = {}
        for i, h in enumerate(units.hashes):
            positions.setdefault(h, []).append(i)
        template = self._best(partition, positions)
        if template is None:
            self._add_candidate(partition, units)
            return None
        found = template.match(positions)
        if template.matched_weight(found) < template.weight * MATCH_SHARE:
            self._add_candidate(partition, units)
            return None
        before = list(template.anchors)
        split = template.learn(text, units, found, turn)
        if template.anchors != before:
            self._unindex(template.id, before)
            self._reindex(template)
        self._touch(template, partition)
        return None if template.fragmented else split

    def _best(self, partition: Partition, positions: dict[int, list[int]]) -> Template | None:
        votes: dict[str, int] = {}
        index = self._index
        for h in positions:
            for tid in index.get(h, ()):
                votes[tid] = votes.get(tid, 0) + self._weights[tid].get(h, 0)
        best: Template | None = None
        best_share = MATCH_SHARE
        for tid, got in votes.items():
            if self._partition.get(tid) != partition:
                continue
            template = self._learned.get(tid) or self._candidates.get(tid)
            if template is None or template.weight == 0:
                continue
            share = got / template.weight
            if share >= best_share:
                best, best_share = template, share
        return best

    def _add_candidate(self, partition: Partition, units: Units) -> None:
        self._serial += 1
        digest = hashlib.blake2b(repr((self._serial, partition)).encode(), digest_size=6)
        template = Template.first(digest.hexdigest(), units)
        self._candidates[template.id] = template
        self._partition[template.id] = partition
        self._reindex(template)
        self._shrink()

    def _touch(self, template: Template, partition: Partition) -> None:
        tid = template.id
        if tid in self._candidates:
            del self._candidates[tid]
            self._learned[tid] = template
        else:
            self._learned.move_to_end(tid)
        recent = self._recent.setdefault(partition, [])
        if not recent or recent[0] != tid:
            if tid in recent:
                recent.remove(tid)
            recent.insert(0, tid)
            del recent[RECENT:]
        self._shrink()

    def _shrink(self) -> None:
        while len(self._candidates) > self.max_candidates:
            self._evict(self._candidates)
        while len(self._learned) > self.max_templates:
            self._evict(self._learned)
        while self._units > self.max_units and (self._candidates or len(self._learned) > 1):
            self._evict(self._candidates if self._candidates else self._learned)

    def _evict(self, pool: OrderedDict[str, Template]) -> None:
        tid, template = pool.popitem(last=False)
        self._unindex(tid, template.anchors)
        partition = self._partition.pop(tid, None)
        if partition is None:
            return
        recent = self._recent.get(partition, [])
        if tid in recent:
            recent.remove(tid)
        if not recent:
            self._recent.pop(partition, None)

    def _reindex(self, template: Template) -> None:
        weights: dict[int, int] = {}
        for h, chars in zip(template.anchors, template.anchor_chars, strict=True):
            weights[h] = weights.get(h, 0) + chars
            self._index.setdefault(h, set()).add(template.id)
        self._weights[template.id] = weights
        self._units += len(template.anchors)

    def _unindex(self, tid: str, anchors: list[int]) -> None:
        for h in set(anchors):
            ids = self._index.get(h)
            if ids is not None:
                ids.discard(tid)
                if not ids:
                    del self._index[h]
        self._weights.pop(tid, None)
        self._units -= len(anchors)

    # ------------------------------------------------------------------ tool lists
    def tool_order(self, scope: tuple[str, str], names: tuple[str, ...]) -> bool:
        """Whether to send these tools sorted by name: ``True`` once the app was seen
        sending the same tools (by name) in another order within ``scope`` (route,
        model). A tool list whose order changes makes every prefix unique, though
        nothing in it changed; sorted, it is byte-stable again."""
        key = (scope, hash(tuple(sorted(names))))
        seen = self._tool_orders.get(key)
        if seen is None:
            self._tool_orders[key] = (names, False)
            while len(self._tool_orders) > TOOL_LISTS:
                del self._tool_orders[next(iter(self._tool_orders))]
            return False
        first, unstable = seen
        if not unstable and names != first:
            unstable = True
            self._tool_orders[key] = (first, True)
        return unstable

    # ------------------------------------------------------------------ measuring
    def record(self, template_id: str, *, expected: int, read: int, total_input: int) -> None:
        """One outcome of a plan made under ``template_id`` (for the measured hit rate)."""
        template = self._learned.get(template_id)
        if template is None:
            return
        template.hits_expected += expected
        template.hits_read += read
        template.input_tokens += total_input

    # ------------------------------------------------------------------ reporting
    def __len__(self) -> int:
        return len(self._learned)

    @property
    def units(self) -> int:
        """Anchors held in all templates (the memory bound's measure)."""
        return self._units

    @property
    def candidates(self) -> int:
        return len(self._candidates)

    def shapes(self) -> list[TemplateShape]:
        """Every template by shape, learned ones first (most recently used first)."""
        out: list[TemplateShape] = []
        for state, pool in (("learned", self._learned), ("candidate", self._candidates)):
            for tid in reversed(pool):
                out.append(_shape(pool[tid], state, self._partition.get(tid, ("", "", ""))))
        return out


def _spans(template: Template) -> Iterator[SpanShape]:
    run = 0
    gap = template.gaps.get(-1)
    if gap is not None:
        yield SpanShape(gap.kind, gap.chars)
    for i, chars in enumerate(template.anchor_chars):
        run += chars
        gap = template.gaps.get(i)
        if gap is not None:
            yield SpanShape("stable", run)
            run = 0
            yield SpanShape(gap.kind, gap.chars)
    if run:
        yield SpanShape("stable", run)


def _shape(template: Template, state: str, partition: Partition) -> TemplateShape:
    total = template.input_tokens
    return TemplateShape(
        id=template.id,
        route=partition[0],
        model=partition[1],
        state=state,
        samples=template.samples,
        version=template.version,
        spans=tuple(_spans(template)),
        predicted_hit_rate=template.hits_expected / total if total else None,
        measured_hit_rate=template.hits_read / total if total else None,
    )
