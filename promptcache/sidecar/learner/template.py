"""One learned prompt template: stable anchors and the changing gaps between them.

A template is what requests of one prompt have in common. Its *anchors* are the units
(``units.py``) found byte-identical, in the same order, in every request it learned
from; between two anchors (and before the first, after the last) may sit a *gap*: units
that differed at least once. Within a gap, a unit is *per conversation* when it came
back identical on every turn so far of the request's conversation, and *per request*
otherwise. On a conversation's first turn a unit stays only when its *label* (the text
before ``": "``, as in ``Customer: Ada``) was seen unchanged across the turns of other
conversations and never changing within one; else the first turn relocates it (the
cautious default: moving text behind the history never breaks caching of the rest).

Learning only ever turns anchors into gaps, never back, so a span that keeps changing
never becomes part of a static prefix again; a prompt that
changes enough stops matching and is learned afresh as a new template (``learner.py``).

Nothing here holds prompt text: anchors are in-process hashes and lengths.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal

from promptcache.sidecar.learner.units import Units

GapKind = Literal["request", "conversation", "mixed"]
CONVERSATIONS_PER_GAP = 16
"""Conversations whose last gap content a gap remembers (to tell the two kinds apart)."""
MAX_LABELS = 256
"""Labels a gap remembers (kept or changed) before it forgets them all."""
LABEL_MAX = 40
"""Longest label (text before ``": "`` at the start of a unit), characters."""
MAX_GAPS = 32
"""A template with more gaps than this is too fragmented to be worth applying."""


@dataclass(slots=True)
class Gap:
    """A stretch between two anchors that has changed at least once.

    Which of its units stay in place is decided per conversation: a unit present on
    every turn so far of the request's conversation (the running intersection of the
    unit hashes this gap held) is per conversation; any other unit is per request. The
    first turn of a conversation therefore relocates the whole gap, later turns keep
    the units that have not changed (a customer profile) and relocate the rest
    (retrieved text, a timestamp).
    """

    by_conversation: OrderedDict[int, tuple[frozenset[int], dict[int, int]]] = field(
        default_factory=OrderedDict
    )
    """Conversation key -> (unit hashes present on every turn so far, label -> unit hash
    on the last turn), bounded."""
    labels_kept: set[int] = field(default_factory=set)
    """Labels (hash of the text before ``": "``) of units seen unchanged across the turns
    of a conversation: such a unit stays in place from a conversation's first turn."""
    labels_changed: set[int] = field(default_factory=set)
    """Labels of units seen changing within a conversation: never kept by label."""
    chars: int = 0
    """Length of its content in the last request, characters."""
    kept_chars: int = 0
    """Of which kept in place (per conversation) in the last request."""

    def merge(self, other: Gap) -> None:
        for conv, (units, labels) in other.by_conversation.items():
            mine = self.by_conversation.get(conv)
            self.by_conversation[conv] = (
                (units, labels) if mine is None else (mine[0] | units, {**mine[1], **labels})
            )
        self.labels_kept |= other.labels_kept
        self.labels_changed |= other.labels_changed
        self.labels_kept -= self.labels_changed

    def observe(
        self, conversation: int | None, hashes: tuple[int, ...], labels: list[int | None]
    ) -> frozenset[int]:
        """Record this gap's units on one turn; return the ones that stay in place."""
        by_label = {lab: h for h, lab in zip(hashes, labels, strict=True) if lab is not None}
        known = frozenset(
            h
            for h, lab in zip(hashes, labels, strict=True)
            if lab is not None and lab in self.labels_kept and lab not in self.labels_changed
        )
        if conversation is None:
            return known
        seen = frozenset(hashes)
        before = self.by_conversation.get(conversation)
        if before is None:
            kept = known
            self.by_conversation[conversation] = (seen, by_label)
        else:
            kept = before[0] & seen
            for lab, h in by_label.items():
                old = before[1].get(lab)
                if old is None:
                    continue
                if old == h:
                    self.labels_kept.add(lab)
                else:
                    self.labels_changed.add(lab)
            self.labels_kept -= self.labels_changed
            kept |= frozenset(
                h
                for h, lab in zip(hashes, labels, strict=True)
                if lab is not None and lab in self.labels_kept
            )
            if len(self.labels_kept) > MAX_LABELS or len(self.labels_changed) > MAX_LABELS:
                self.labels_kept.clear()
                self.labels_changed.clear()
            self.by_conversation[conversation] = (kept, by_label)
        self.by_conversation.move_to_end(conversation)
        while len(self.by_conversation) > CONVERSATIONS_PER_GAP:
            self.by_conversation.popitem(last=False)
        return kept

    @property
    def kind(self) -> GapKind:
        if not self.kept_chars:
            return "request"
        return "conversation" if self.kept_chars == self.chars else "mixed"


@dataclass(frozen=True, slots=True)
class Match:
    """Which anchors a request holds, and where: pairs of (anchor index, unit index)."""

    pairs: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class Split:
    """How one request's system text divides under its template: what the planner applies."""

    template: str
    """The template's id (a short hex digest of its anchors; never text)."""
    stable: tuple[tuple[int, int], ...]
    """(start, end) of each stable stretch, in order: the static prefix is their text."""
    conversation: tuple[tuple[int, int], ...]
    """(start, end) of per-conversation stretches, kept right after the static prefix."""
    request: tuple[tuple[int, int], ...]
    """(start, end) of per-request stretches, relocated behind the history."""
    samples: int
    """Requests the template was learned from, this one included."""

    @property
    def changing(self) -> bool:
        return bool(self.conversation or self.request)


@dataclass(slots=True)
class Template:
    """Anchors and gaps of one prompt (see the module docstring)."""

    id: str
    anchors: list[int]
    """Hashes of the stable units, in order."""
    anchor_chars: list[int]
    gaps: dict[int, Gap] = field(default_factory=dict)
    """Gap after anchor ``i`` (``-1``: before the first anchor)."""
    samples: int = 1
    version: int = 0
    """Bumped whenever anchors or gaps change shape (the static prefix changed)."""
    weight: int = 0
    """Total characters of the anchors (what a request must hold half of to match)."""
    hits_expected: int = 0
    """Cached tokens the plans under this template expected (measured hit rate)."""
    hits_read: int = 0
    input_tokens: int = 0

    @classmethod
    def first(cls, tid: str, units: Units) -> Template:
        chars = [units.ends[i] - units.start(i) for i in range(len(units))]
        return cls(tid, list(units.hashes), chars, weight=sum(chars))

    def match(self, positions: dict[int, list[int]]) -> Match:
        """The anchors found in a request (greedy, in order), by unit positions."""
        pairs: list[tuple[int, int]] = []
        last = -1
        for ai, h in enumerate(self.anchors):
            where = positions.get(h)
            if not where:
                continue
            j = bisect.bisect_right(where, last)
            if j < len(where):
                last = where[j]
                pairs.append((ai, last))
        return Match(tuple(pairs))

    def matched_weight(self, found: Match) -> int:
        return sum(self.anchor_chars[ai] for ai, _ in found.pairs)

    def learn(self, text: str, units: Units, found: Match, conversation: int | None) -> Split:
        """Update the template with one request of it; return that request's split."""
        kept = {ai for ai, _ in found.pairs}
        old_to_new: dict[int, int] = {}
        new_index = -1
        for ai in range(len(self.anchors)):
            if ai in kept:
                new_index += 1
            old_to_new[ai] = new_index
        # Gaps follow the latest kept anchor at or before them; dropped anchors open one.
        gaps: dict[int, Gap] = {}
        for after, gap in self.gaps.items():
            at = old_to_new[after] if after >= 0 else -1
            if at in gaps:
                gaps[at].merge(gap)
            else:
                gaps[at] = gap
        for ai in range(len(self.anchors)):
            if ai not in kept:
                gaps.setdefault(old_to_new[ai], Gap())
        pairs = found.pairs
        bounds = [-1, *(r for _, r in pairs), len(units)]
        for k in range(len(pairs) + 1):
            lo, hi = bounds[k] + 1, bounds[k + 1]
            if hi > lo and (k - 1) not in gaps:
                gaps[k - 1] = Gap()
        reshaped = len(kept) != len(self.anchors) or set(gaps) != set(self.gaps)
        if reshaped:
            self.anchors = [self.anchors[ai] for ai, _ in pairs]
            self.anchor_chars = [self.anchor_chars[ai] for ai, _ in pairs]
            self.weight = sum(self.anchor_chars)
            self.version += 1
        self.gaps = gaps
        self.samples += 1

        stable: list[tuple[int, int]] = []
        conv: list[tuple[int, int]] = []
        req: list[tuple[int, int]] = []
        for k in range(len(pairs) + 1):
            if k > 0:
                r = bounds[k]
                _extend(stable, units.start(r), units.ends[r])
            here = gaps.get(k - 1)
            if here is None:
                continue
            lo, hi = bounds[k] + 1, bounds[k + 1]
            labels = [label_of(text, units.start(r), units.ends[r]) for r in range(lo, hi)]
            stay = here.observe(conversation, units.hashes[lo:hi], labels)
            here.chars = here.kept_chars = 0
            for r in range(lo, hi):
                start, end = units.start(r), units.ends[r]
                here.chars += end - start
                if units.hashes[r] in stay:
                    here.kept_chars += end - start
                    _extend(conv, start, end)
                else:
                    _extend(req, start, end)
        return Split(self.id, tuple(stable), tuple(conv), tuple(req), self.samples)

    @property
    def fragmented(self) -> bool:
        return len(self.gaps) > MAX_GAPS


def label_of(text: str, start: int, end: int) -> int | None:
    """Hash of a unit's label (``Customer`` in ``Customer: Ada``), ``None`` without one."""
    head, sep, _ = text[start : min(end, start + LABEL_MAX + 2)].partition(": ")
    if not sep or not head.strip() or "\n" in head:
        return None
    return hash(head.strip())


def _extend(spans: list[tuple[int, int]], start: int, end: int) -> None:
    """Append ``[start, end)``, merging with the last span when they touch."""
    if spans and spans[-1][1] == start:
        spans[-1] = (spans[-1][0], end)
    else:
        spans.append((start, end))
