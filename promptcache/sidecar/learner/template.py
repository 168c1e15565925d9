"""One learned prompt template: stable anchors and the changing gaps between them.

A template is what requests of one prompt have in common. Its *anchors* are the units
(``units.py``) found byte-identical, in the same order, in every request it learned
from; between two anchors (and before the first, after the last) may sit a *gap*: units
that differed at least once. Which gap units stay in place (*per conversation*) and
which move behind the history (*per request*) is decided once per conversation, on the
first turn the template sees of it: the units of a gap whose content was seen unchanged
from turn to turn in other conversations (a customer block between two stable lines)
stay, and so does a unit whose *label* (the text before ``": "``, as in ``Customer:
Ada``) was seen unchanged across the turns of other conversations, and never changing
within one; the rest moves (the cautious default: moving text behind the history never
breaks the caching of the rest). Later turns keep what was kept
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
from dataclasses import dataclass, field, replace
from typing import Literal

from promptcache.sidecar.learner.units import Units, split_units

GapKind = Literal["request", "conversation", "mixed"]
CONVERSATIONS = 512
"""Conversation turns a template remembers (what it keeps in place and pins for each, and
its labels): a conversation's next turn finds its last one here."""
LABELS_PER_TURN = 32
"""Labels remembered per conversation turn."""
MAX_LABELS = 256
"""Labels a gap remembers (kept or changed) before it forgets them all."""
LABEL_CACHE = 8192
"""Units whose label a template remembers (cleared past this: 8192 small entries)."""
_UNSEEN = -1
"""``unit_labels`` miss marker (a label is a ``hash``, which is never -1 in CPython)."""
LABEL_MAX = 40
"""Longest label (text before ``": "`` at the start of a unit), characters."""
STRETCH_CHARS = 256 * 1024
"""Stable text kept per template for the fast path (longer prompts take the slow path)."""
MAX_GAPS = 32
"""A template with more gaps than this is too fragmented to be worth applying."""
GAP_STAYS = 2
"""Later turns a gap must have been seen unchanged in before it counts as per conversation."""
GAP_TOLERANCE = 16
"""A per-conversation gap may have changed once for this many times it stayed (a customer
who edits their profile mid-chat) and still count as per conversation."""
GAP_MEMORY = 64
"""Observations a gap weighs; past this its counts halve, so the recent ones count most."""


@dataclass(slots=True)
class Gap:
    """A stretch between two anchors that has changed at least once (sizes for reports;
    which of its units stay in place is decided per conversation by the template)."""

    chars: int = 0
    """Length of its content in the last request, characters."""
    kept_chars: int = 0
    """Of which per conversation (kept in place or pinned) in the last request."""
    stays: int = 0
    """Later turns of a conversation whose content here was the same as on its turn before."""
    moves: int = 0
    """Later turns whose content here had changed since the conversation's turn before."""

    def merge(self, other: Gap) -> None:
        self.chars += other.chars
        self.kept_chars += other.kept_chars
        self.stays = min(self.stays, other.stays)
        self.moves += other.moves

    def observe(self, stayed: bool) -> None:
        """One later turn of a conversation: did this gap's content stay the same?"""
        if stayed:
            self.stays += 1
        else:
            self.moves += 1
        if self.stays + self.moves > GAP_MEMORY:
            self.stays //= 2
            self.moves //= 2

    @property
    def moving(self) -> bool:
        """Seen changing from turn to turn more often than not: never pinned."""
        return self.moves >= GAP_STAYS and self.moves > self.stays

    @property
    def conversational(self) -> bool:
        """Seen the same on every turn of the conversations seen (nearly always): the
        whole gap stays in place from a new conversation's first turn."""
        return self.stays >= GAP_STAYS and self.moves * GAP_TOLERANCE <= self.stays

    @property
    def kind(self) -> GapKind:
        if not self.kept_chars:
            return "request"
        return "conversation" if self.kept_chars == self.chars else "mixed"


@dataclass(frozen=True, slots=True)
class _Pending:
    """One gap's units in one request, waiting to be classified."""

    gap: Gap
    key: int
    """The gap's key in the template (the anchor it follows)."""
    base: int
    hashes: tuple[int, ...]
    ends: Sequence[int]
    """Relative to ``base``."""


@dataclass(frozen=True, slots=True)
class _Seen:
    """One conversation, as its last turn left it."""

    kept: frozenset[int]
    """Units kept in place for it (decided on its first turn)."""
    labels: dict[int, int]
    """Label -> unit hash on its last turn."""
    version: int
    """The template's version then (gap keys are comparable only within one version)."""
    gaps: dict[int, int]
    """Gap key -> hash of the gap's units on its last turn."""
    pin_at: int | None = None
    """The user message its pinned units go into (``None``: nothing pinned)."""
    pin: tuple[int, ...] = ()
    """The pinned units, in order."""
    pin_final: bool = False
    """Set on the conversation's second turn, once the pin kept what came back."""


@dataclass(frozen=True, slots=True)
class Turn:
    """Where one request sits in its conversation."""

    conversation: int | None = None
    """The conversation's key as this turn leaves it, ``None`` when it has none."""
    previous: int | None = None
    """Its key as its previous turn left it (``None``: this is its first turn)."""
    newest: int | None = None
    """Index of the newest user message a pin may go into (``None``: no such message)."""


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
    pinned: tuple[tuple[int, int], ...] = ()
    """(start, end) of per-conversation stretches pinned into the history (``pin_at``)."""
    pin_at: int | None = None
    """Index of the user message the pinned text goes at the start of."""

    @property
    def changing(self) -> bool:
        return bool(self.conversation or self.request or self.pinned)


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
    conversations: OrderedDict[int, _Seen] = field(default_factory=OrderedDict)
    """Conversation key -> what its last turn held and what stays in place for it; least
    recently seen out past ``CONVERSATIONS``."""
    labels_kept: set[int] = field(default_factory=set)
    """Labels (hash of the text before ``": "``) of units seen unchanged across the turns
    of a conversation: such a unit stays in place from a new conversation's first turn."""
    labels_changed: set[int] = field(default_factory=set)
    """Labels seen changing within a conversation, or twice in one request: never kept."""
    unit_labels: dict[int, int | None] = field(default_factory=dict)
    """Unit hash -> its label's hash (``label_of``): units recur from request to request,
    so each one's label is found once (bounded by ``LABEL_CACHE``)."""
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

    def learn(self, text: str, units: Units, found: Match, turn: Turn) -> Split:
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
            pending.append(_Pending(here, k - 1, base, units.hashes[lo:hi], ends))
        pinned: list[tuple[int, int]] = []
        pin_at = self._classify(text, pending, turn, conv, req, pinned)
        self._remember(text, stable, len(pairs))
        return _split(self, stable, conv, req, pinned, pin_at)

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

    def fit(self, text: str, turn: Turn) -> Split | None:
        """The fast path: ``text`` holds the stretches the template last saw, in order, with
        changing text only where the template has gaps. Then the split comes from a few
        substring searches and the gap text alone; else ``None`` (compare unit by unit).
        """
        stretches = self.stretches
        if stretches is None:
            return None
        if not self.gaps:
            # Nothing has ever changed: the request matches only if it is the same text,
            # and it is all stable (no conversation to look at).
            if len(stretches) != 1 or text != stretches[0]:
                return None
            self.samples += 1
            return Split(self.id, ((0, len(text)),), (), (), self.samples, self.version)
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
            pending.append(_Pending(self.gaps[key], key, start, units.hashes, units.ends))
        pinned: list[tuple[int, int]] = []
        pin_at = self._classify(text, pending, turn, conv, req, pinned)
        self.samples += 1
        return _split(self, spans, conv, req, pinned, pin_at)

    def _classify(
        self,
        text: str,
        pending: list[_Pending],
        turn: Turn,
        conv: list[tuple[int, int]],
        req: list[tuple[int, int]],
        pinned: list[tuple[int, int]],
    ) -> int | None:
        """Which gap units of one request stay in place (per conversation), which are
        pinned into the conversation's history, and which move; returns the message the
        pinned ones go into.

        Decided once per conversation, on the first turn the template sees of it: the
        units of a gap seen unchanged across the turns of other conversations stay, and
        so do units whose label is known to stay the same within a conversation. Units
        not known to change (their gap mostly changed from turn to turn, or their label
        did) are *pinned*: put at the start of that turn's newest user message, where no
        cache entry covers them yet. On the conversation's next turn the pin keeps the
        units that came back unchanged and lets the rest move; from then on it is fixed,
        and the app's history carries it, cached, like the rest of the conversation.
        Everything else moves behind the history. Later turns keep what was kept and
        pinned (while all of it is still there) and nothing else, so the conversation's
        cached prefix never changes mid-way. Each later turn teaches: each gap, whether
        its content is the same as on the conversation's turn before; each label,
        whether its unit is (the same label twice in one request counts as changing).
        """
        conversation, newest = turn.conversation, turn.newest
        state = self.conversations.get(turn.previous) if turn.previous is not None else None
        need_labels = bool(self.labels_kept or self.labels_changed) or state is not None
        units: list[tuple[_Pending, int, int, int, int | None]] = []
        labels_of = self.unit_labels
        if len(labels_of) > LABEL_CACHE:
            labels_of.clear()
        for item in pending:
            start = 0
            base = item.base
            for h, end in zip(item.hashes, item.ends, strict=True):
                a, b = base + start, base + end
                lab: int | None = None
                if need_labels:
                    # A unit's label depends on its text alone: look it up by its hash.
                    lab = labels_of.get(h, _UNSEEN)
                    if lab == _UNSEEN:
                        lab = labels_of[h] = label_of(text, a, b)
                units.append((item, h, a, b, lab))
                start = end
        by_label: dict[int, int] = {}
        for _, h, _, _, lab in units:
            if lab is None:
                continue
            if lab in by_label:
                self.labels_changed.add(lab)
            by_label[lab] = h
        contents = {item.key: hash(item.hashes) for item in pending}
        changed = self.labels_changed
        pin_at: int | None = None
        pin: tuple[int, ...] = ()
        final = False
        if conversation is None or state is None:
            kept_labels = self.labels_kept - changed
            kept = frozenset(
                h
                for item, h, _, _, lab in units
                if item.gap.conversational or (lab is not None and lab in kept_labels)
            )
            if conversation is not None and newest is not None:
                pin = tuple(
                    h
                    for item, h, _, _, lab in units
                    if h not in kept and not item.gap.moving and (lab is None or lab not in changed)
                )
                pin_at = newest if pin else None
            if conversation is not None:
                self._remember_conversation(
                    conversation, _Seen(kept, by_label, self.version, contents, pin_at, pin)
                )
        else:
            present = [h for _, h, _, _, _ in units]
            kept = state.kept & frozenset(present)
            for lab, h in by_label.items():
                old = state.labels.get(lab)
                if old is not None:
                    (self.labels_kept if old == h else changed).add(lab)
            self.labels_kept -= changed
            if len(self.labels_kept) > MAX_LABELS or len(changed) > MAX_LABELS:
                self.labels_kept.clear()
                changed.clear()
            if state.version == self.version:
                for item in pending:
                    before = state.gaps.get(item.key)
                    if before is not None:
                        item.gap.observe(before == contents[item.key])
            pin_at, pin, final = state.pin_at, state.pin, state.pin_final
            if pin_at is not None and not final:
                # The conversation's second turn (found by its previous turn's key, so
                # never a retry of the first): keep what came back unchanged.
                pin = self._refine(pin, state, pending, units, contents)
                final = True
            shorter = newest is not None and pin_at is not None and newest < pin_at
            if pin_at is None or shorter or not _in_order(pin, present):
                pin_at, pin = None, ()  # the history changed or the pinned text did: it moves
            self._remember_conversation(
                conversation,
                _Seen(state.kept, by_label, self.version, contents, pin_at, pin, final),
            )
        for item in pending:
            item.gap.chars = item.ends[-1] if item.ends else 0
            item.gap.kept_chars = 0
        want, at = pin, 0
        run: list[tuple[int, int]] | None = None
        run_start = run_end = 0
        for item, h, a, b, _ in units:
            if h in kept:
                item.gap.kept_chars += b - a
                spans = conv
            elif at < len(want) and h == want[at]:
                at += 1
                if final:  # came back unchanged: per conversation, only placed elsewhere
                    item.gap.kept_chars += b - a
                spans = pinned
            else:
                spans = req
            if spans is run and a == run_end:
                run_end = b
                continue
            if run is not None:
                _extend(run, run_start, run_end)
            run, run_start, run_end = spans, a, b
        if run is not None:
            _extend(run, run_start, run_end)
        return pin_at if pin else None

    def _refine(
        self,
        pin: tuple[int, ...],
        state: _Seen,
        pending: list[_Pending],
        units: list[tuple[_Pending, int, int, int, int | None]],
        contents: dict[int, int],
    ) -> tuple[int, ...]:
        """What a conversation's second turn keeps of the units its first turn pinned.

        Whole gaps whose content came back unchanged (and that do not mostly change in
        other conversations); when the template changed shape in between, the pinned
        units found again in order, by label where they have one.
        """
        if state.version == self.version:
            same = {
                item.key
                for item in pending
                if not item.gap.moving and state.gaps.get(item.key) == contents[item.key]
            }
            pinned = set(pin)
            return tuple(h for item, h, _, _, _ in units if item.key in same and h in pinned)
        present = [h for _, h, _, _, lab in units if lab is None or lab not in self.labels_changed]
        out: list[int] = []
        at = 0
        for h in pin:
            try:
                at = present.index(h, at) + 1
            except ValueError:
                continue
            out.append(h)
        return tuple(out)

    def _remember_conversation(self, conversation: int, seen: _Seen) -> None:
        if len(seen.labels) > LABELS_PER_TURN:
            seen = replace(seen, labels=dict(list(seen.labels.items())[:LABELS_PER_TURN]))
        if len(seen.gaps) > MAX_GAPS:
            seen = replace(seen, gaps={})
        self.conversations[conversation] = seen
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
    pinned: list[tuple[int, int]],
    pin_at: int | None,
) -> Split:
    """The ``Split`` of one request, short stable stretches folded into their neighbours
    (per conversation, or pinned, after such a span; else per request)."""
    if len(stable) > 1 and any(b - a < MIN_STRETCH for a, b in stable):
        spans = sorted(
            [(a, b, "s") for a, b in stable]
            + [(a, b, "c") for a, b in conv]
            + [(a, b, "r") for a, b in req]
            + [(a, b, "p") for a, b in pinned]
        )
        stable, conv, req, pinned = [], [], [], []
        before = ""
        for a, b, kind in spans:
            if kind == "s" and b - a < MIN_STRETCH:
                kind = before if before in ("c", "p") else "r"
            _extend({"s": stable, "c": conv, "r": req, "p": pinned}[kind], a, b)
            before = kind
    return Split(
        template.id,
        tuple(stable),
        tuple(conv),
        tuple(req),
        template.samples,
        template.version,
        tuple(pinned),
        pin_at if pinned else None,
    )


def _extend(spans: list[tuple[int, int]], start: int, end: int) -> None:
    """Append ``[start, end)``, merging with the last span when they touch."""
    if spans and spans[-1][1] == start:
        spans[-1] = (spans[-1][0], end)
    else:
        spans.append((start, end))


def _in_order(pin: tuple[int, ...], present: list[int]) -> bool:
    """``pin`` is a subsequence of ``present`` (the pinned units are all there, in order)."""
    it = iter(present)
    return all(h in it for h in pin)
