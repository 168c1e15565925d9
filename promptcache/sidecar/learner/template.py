"""One learned prompt template: stable anchors and the changing gaps between them.

A template is what requests of one prompt have in common. Its *anchors* are the units
(``units.py``) found byte-identical, in the same order, in every request it learned
from; between two anchors (and before the first, after the last) may sit a *gap*: units
that differed at least once. Which gap units stay in place (*per conversation*) and
which move behind the history (*per request*) is decided once per conversation, on the
first turn the template sees of it: a unit whose *label* (the text before ``": "``, as
in ``Customer: Ada``) was seen unchanged across the turns of other conversations, and
never changing within one, stays; the rest moves (the cautious default: moving text
behind the history never breaks the caching of the rest). Later turns keep what was kept
then, so the text kept in the conversation's cached prefix never changes mid-way.

Learning only ever turns anchors into gaps, never back, so a span that keeps changing
never becomes part of a static prefix again; a prompt that
changes enough stops matching and is learned afresh as a new template (``learner.py``).

Nothing here holds prompt text: anchors are in-process hashes and lengths.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from promptcache.sidecar.learner.units import Units, split_units

GapKind = Literal["request", "conversation", "mixed"]
CONVERSATIONS = 256
"""Conversations a template remembers (what it keeps in place for each, and its labels)."""
LABELS_PER_TURN = 32
"""Labels remembered per conversation turn."""
MAX_LABELS = 256
"""Labels a gap remembers (kept or changed) before it forgets them all."""
LABEL_MAX = 40
"""Longest label (text before ``": "`` at the start of a unit), characters."""
STRETCH_CHARS = 256 * 1024
"""Stable text kept per template for the fast path (longer prompts take the slow path)."""
MAX_GAPS = 32
"""A template with more gaps than this is too fragmented to be worth applying."""


@dataclass(slots=True)
class Gap:
    """A stretch between two anchors that has changed at least once (sizes for reports;
    which of its units stay in place is decided per conversation by the template)."""

    chars: int = 0
    """Length of its content in the last request, characters."""
    kept_chars: int = 0
    """Of which kept in place (per conversation) in the last request."""

    def merge(self, other: Gap) -> None:
        self.chars += other.chars
        self.kept_chars += other.kept_chars

    @property
    def kind(self) -> GapKind:
        if not self.kept_chars:
            return "request"
        return "conversation" if self.kept_chars == self.chars else "mixed"


@dataclass(frozen=True, slots=True)
class _Pending:
    """One gap's units in one request, waiting to be classified."""

    gap: Gap
    base: int
    hashes: tuple[int, ...]
    ends: Sequence[int]
    """Relative to ``base``."""


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
    version: int = 0
    """The template's version (bumped whenever its stable part changed shape)."""

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
    conversations: OrderedDict[int, tuple[frozenset[int], dict[int, int]]] = field(
        default_factory=OrderedDict
    )
    """Conversation key -> (units kept in place for it, label -> unit hash on its last
    turn); least recently seen out past ``CONVERSATIONS``."""
    labels_kept: set[int] = field(default_factory=set)
    """Labels (hash of the text before ``": "``) of units seen unchanged across the turns
    of a conversation: such a unit stays in place from a new conversation's first turn."""
    labels_changed: set[int] = field(default_factory=set)
    """Labels seen changing within a conversation, or twice in one request: never kept."""
    stretches: list[str] | None = None
    """Text of the stable stretches the last request held (for ``fit``; bounded by
    ``STRETCH_CHARS``). Kept in memory only, never shown."""
    gap_keys: list[int | None] = field(default_factory=list)
    """Gap before each stretch and after the last (``None``: no gap there)."""

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
        pending: list[_Pending] = []
        for k in range(len(pairs) + 1):
            if k > 0:
                r = bounds[k]
                if (k - 2) in gaps or not stable:  # a gap (even empty) ends a stretch
                    stable.append((units.start(r), units.ends[r]))
                else:
                    stable[-1] = (stable[-1][0], units.ends[r])
            here = gaps.get(k - 1)
            if here is None:
                continue
            lo, hi = bounds[k] + 1, bounds[k + 1]
            base = units.start(lo) if lo < len(units) else len(text)
            ends = [units.ends[r] - base for r in range(lo, hi)]
            pending.append(_Pending(here, base, units.hashes[lo:hi], ends))
        self._classify(text, pending, conversation, conv, req)
        self._remember(text, stable, len(pairs))
        return _split(self, stable, conv, req)

    def _remember(self, text: str, stable: list[tuple[int, int]], anchors: int) -> None:
        """Keep the stable stretches' text for ``fit`` (bounded; none: always the slow path)."""
        if sum(b - a for a, b in stable) > STRETCH_CHARS or not stable:
            self.stretches = None
            return
        self.stretches = [text[a:b] for a, b in stable]
        keys: list[int | None] = [-1 if -1 in self.gaps else None]
        keys.extend(k for k in sorted(self.gaps) if 0 <= k < anchors - 1)
        keys.append(anchors - 1 if (anchors - 1) in self.gaps else None)
        if len(keys) != len(self.stretches) + 1:  # a stretch stripped to nothing; be safe
            self.stretches = None
            return
        self.gap_keys = keys

    def fit(self, text: str, conversation: int | None) -> Split | None:
        """The fast path: ``text`` holds the stretches the template last saw, in order, with
        changing text only where the template has gaps. Then the split comes from a few
        substring searches and the gap text alone; else ``None`` (compare unit by unit).
        """
        stretches = self.stretches
        if stretches is None:
            return None
        keys = self.gap_keys
        spans: list[tuple[int, int]] = []
        pos = 0
        for i, stretch in enumerate(stretches):
            at = _find(text, stretch, pos, anywhere=keys[i] is not None)
            if at < 0:
                return None
            spans.append((at, at + len(stretch)))
            pos = at + len(stretch)
        if pos < len(text) and keys[-1] is None:
            return None
        conv: list[tuple[int, int]] = []
        req: list[tuple[int, int]] = []
        pending: list[_Pending] = []
        edges = [(0, spans[0][0])]
        edges.extend((spans[i][1], spans[i + 1][0]) for i in range(len(spans) - 1))
        edges.append((pos, len(text)))
        for key, (start, end) in zip(keys, edges, strict=True):
            if key is None:
                continue
            units = split_units(text[start:end])
            pending.append(_Pending(self.gaps[key], start, units.hashes, units.ends))
        self._classify(text, pending, conversation, conv, req)
        self.samples += 1
        return _split(self, spans, conv, req)

    def _classify(
        self,
        text: str,
        pending: list[_Pending],
        conversation: int | None,
        conv: list[tuple[int, int]],
        req: list[tuple[int, int]],
    ) -> None:
        """Which gap units of one request stay in place (per conversation) and which move.

        Decided once per conversation, on the first turn the template sees of it: units
        whose label is known to stay the same within a conversation stay, the rest move;
        later turns keep what was kept then (while it is still there) and nothing else,
        so the text kept in the cached prefix never changes mid-conversation. Each turn
        teaches labels: the same label with the same unit as the conversation's previous
        turn stays, with another unit (or twice in one request) changes.
        """
        state = self.conversations.get(conversation) if conversation is not None else None
        need_labels = bool(self.labels_kept) or state is not None
        units: list[tuple[_Pending, int, int, int, int | None]] = []
        for item in pending:
            start = 0
            for h, end in zip(item.hashes, item.ends, strict=True):
                a, b = item.base + start, item.base + end
                units.append((item, h, a, b, label_of(text, a, b) if need_labels else None))
                start = end
        by_label: dict[int, int] = {}
        for _, h, _, _, lab in units:
            if lab is None:
                continue
            if lab in by_label:
                self.labels_changed.add(lab)
            by_label[lab] = h
        kept_labels = self.labels_kept - self.labels_changed
        known = frozenset(h for _, h, _, _, lab in units if lab is not None and lab in kept_labels)
        if conversation is None:
            kept = known
        elif state is None:
            kept = known
            self._remember_conversation(conversation, kept, by_label)
        else:
            decided, before = state
            kept = decided & frozenset(h for _, h, _, _, _ in units)
            for lab, h in by_label.items():
                old = before.get(lab)
                if old is not None:
                    (self.labels_kept if old == h else self.labels_changed).add(lab)
            self.labels_kept -= self.labels_changed
            if len(self.labels_kept) > MAX_LABELS or len(self.labels_changed) > MAX_LABELS:
                self.labels_kept.clear()
                self.labels_changed.clear()
            self._remember_conversation(conversation, decided, by_label)
        for item in pending:
            item.gap.chars = item.gap.kept_chars = 0
        for item, h, a, b, _ in units:
            item.gap.chars += b - a
            if h in kept:
                item.gap.kept_chars += b - a
                _extend(conv, a, b)
            else:
                _extend(req, a, b)

    def _remember_conversation(
        self, conversation: int, kept: frozenset[int], labels: dict[int, int]
    ) -> None:
        if len(labels) > LABELS_PER_TURN:
            labels = dict(list(labels.items())[:LABELS_PER_TURN])
        self.conversations[conversation] = (kept, labels)
        self.conversations.move_to_end(conversation)
        while len(self.conversations) > CONVERSATIONS:
            self.conversations.popitem(last=False)

    @property
    def fragmented(self) -> bool:
        return len(self.gaps) > MAX_GAPS


PROBE = 64
"""Characters of a stretch searched for before comparing all of it: ``str.find`` with a
long needle preprocesses all of it on every call (~100 us for 25 KB here)."""


def _find(text: str, stretch: str, pos: int, *, anywhere: bool) -> int:
    """Where ``stretch`` starts in ``text`` at or after ``pos`` (at ``pos`` exactly unless
    ``anywhere``); -1 when it does not."""
    if text.startswith(stretch, pos):
        return pos
    if not anywhere:
        return -1
    probe = stretch[:PROBE]
    at = text.find(probe, pos)
    while at >= 0:
        if text.startswith(stretch, at):
            return at
        at = text.find(probe, at + 1)
    return -1


def label_of(text: str, start: int, end: int) -> int | None:
    """Hash of a unit's label (``Customer`` in ``Customer: Ada``), ``None`` without one."""
    at = text.find(": ", start, min(end, start + LABEL_MAX + 2))
    if at <= start:
        return None
    head = text[start:at].strip()
    return hash(head) if head and "\n" not in head else None


MIN_STRETCH = 256
"""A stable stretch shorter than this, when it is not the template's only one, goes with
the changing text around it instead of into the static prefix: short lines that recur
among changing text (the boilerplate of retrieved documents, a closing tag) are stable
only by accident and would make the static prefix change whenever they do not recur."""


def _split(
    template: Template,
    stable: list[tuple[int, int]],
    conv: list[tuple[int, int]],
    req: list[tuple[int, int]],
) -> Split:
    """The ``Split`` of one request, short stable stretches folded into their neighbours
    (per conversation after a per-conversation span, else per request)."""
    if len(stable) > 1 and any(b - a < MIN_STRETCH for a, b in stable):
        spans = sorted(
            [(a, b, "s") for a, b in stable]
            + [(a, b, "c") for a, b in conv]
            + [(a, b, "r") for a, b in req]
        )
        stable, conv, req = [], [], []
        before = ""
        for a, b, kind in spans:
            if kind == "s" and b - a < MIN_STRETCH:
                kind = "c" if before == "c" else "r"
            _extend({"s": stable, "c": conv, "r": req}[kind], a, b)
            before = kind
    return Split(
        template.id, tuple(stable), tuple(conv), tuple(req), template.samples, template.version
    )


def _extend(spans: list[tuple[int, int]], start: int, end: int) -> None:
    """Append ``[start, end)``, merging with the last span when they touch."""
    if spans and spans[-1][1] == start:
        spans[-1] = (spans[-1][0], end)
    else:
        spans.append((start, end))
