"""The never-worse guard: a breakpoint stays only while its writes are read back.

A cache write costs more than plain input (Anthropic: 1.25x for 5 minutes, 2x for an
hour; the model table's multipliers, a policy's pricing override applied), a read costs
less (0.1x). A breakpoint pays for itself when what its entries save on reads exceeds
the write premium. The guard keeps that account per *track*: one static prefix key (a
policy, a learned template, or the no-policy default of a route and model) and one tier
(``system``, ``history``, ``tools``).

- Every write the provider reports is attributed to the tier that caused it and kept as
  *open* until a later request reads it back (the same prefix fingerprint).
- A marker placed opens a write (its tokens come with the outcome); a write is judged
  *unread* when ``STRIKES`` later requests of its track planned another prefix before
  any read it (``1`` while nothing under the track was ever read,
  or for a probe), or when its TTL passed unread. Unread write tokens are counted
  (``promptcache_guard_unread_write_tokens_total``).
- A track whose premium paid exceeds what its reads saved, once ``WITHDRAW_AFTER``
  writes were unread (one for a probe), is *withdrawn*: the planner places no marker of
  that tier for it. After ``backoff`` requests of the track one request *probes* (its
  marker is placed again); a probe read back makes the track active again, an unread
  probe withdraws it for twice as long (``MAX_BACKOFF`` at most).

The app's own markers are never touched: the guard governs the planner's only.
Bounded: ``capacity`` tracks and ``capacity`` open writes, least recently used out.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal

from promptcache.sidecar.planner.lru import Lru

State = Literal["active", "withdrawn", "probing"]
Source = Literal["policy", "learned", "default"]
"""What decided the prefix: a hand-written policy, a learned template, or neither."""
STRIKES = 2
WITHDRAW_AFTER = 2
FIRST_BACKOFF = 8
"""Requests of a track before its first probe."""
MAX_BACKOFF = 512
OPEN_PER_TRACK = 8
"""Open writes remembered per track (older ones are judged by TTL only)."""


@dataclass(slots=True)
class Track:
    """The account of one (key, tier)."""

    policy: str | None
    source: Source
    state: State = "active"
    premium: float = 0.0
    """Write premium paid, in base-input tokens ((multiplier - 1) x tokens written)."""
    saved: float = 0.0
    """Saved by reads, in base-input tokens ((1 - read multiplier) x tokens read)."""
    unread_writes: int = 0
    unread_tokens: int = 0
    backoff: int = FIRST_BACKOFF
    wait: int = 0
    probe_fp: str | None = None
    withdrawals: int = 0
    open: list[str] = field(default_factory=list)
    """Fingerprints of this track's open writes, oldest first."""


@dataclass(slots=True)
class _Write:
    track: tuple[str, str]
    fp: str
    tokens: int
    at: float
    ttl: float
    probe: bool
    strikes: int = 0
    read: bool = False
    judged: bool = False


@dataclass(frozen=True, slots=True)
class GuardNote:
    """What the guard needs from a plan to judge its outcome."""

    key: str
    policy: str | None
    source: Source
    tiers: tuple[str, ...]
    """Tiers of the planner's markers in the request."""
    write_multiplier: float
    read_multiplier: float
    ttl_seconds: float


class Guard:
    """Per-track accounts of cache writes against reads (see the module docstring)."""

    def __init__(self, capacity: int = 1024) -> None:
        self._tracks: Lru[tuple[str, str], Track] = Lru(capacity)
        self._writes: OrderedDict[tuple[str, str, str], _Write] = OrderedDict()
        self._capacity = capacity
        self.unread_tokens: dict[tuple[str | None, Source], int] = {}
        """Cumulative unread write tokens by (policy, source): the metric's source."""

    def _track(self, key: str, tier: str, policy: str | None, source: Source) -> Track:
        track = self._tracks.get((key, tier))
        if track is None:
            track = Track(policy, source)
            self._tracks.put((key, tier), track)
        return track

    # ------------------------------------------------------------------ plan time
    def allow(
        self,
        key: str,
        tier: str,
        fp: str | None,
        *,
        policy: str | None,
        source: Source,
        now: float,
        dry: bool = False,
    ) -> bool:
        """Whether the planner may place its ``tier`` marker for this request.

        Counts the request against the track (strikes, backoff) unless ``dry`` (observe
        mode: what enforcing would do, without changing the account).
        """
        if dry:
            track = self._tracks.get((key, tier))
            return track is None or track.state == "active"
        track = self._track(key, tier, policy, source)
        if fp is not None:
            for wfp in list(track.open):
                w = self._writes.get((key, tier, wfp))
                if w is None or w.read or w.judged or wfp == fp:
                    continue
                w.strikes += 1
                limit = 1 if (w.probe or track.saved == 0) else STRIKES
                if w.strikes >= limit:
                    self._unread(w, track)
        if track.state == "probing":
            allowed = fp is None or fp == track.probe_fp
        elif track.state == "withdrawn":
            track.wait -= 1
            allowed = track.wait <= 0
            if allowed:
                track.state = "probing"
                track.probe_fp = fp
        else:
            allowed = True
        if allowed and fp is not None:
            self._open(key, tier, fp, track, planned=now, tokens=0)
        return allowed

    # ------------------------------------------------------------------ outcome time
    def wrote(self, note: GuardNote, tier: str, fp: str, tokens: int, now: float) -> None:
        """The provider wrote ``tokens`` for ``tier``'s marker of a plan under ``note``."""
        track = self._track(note.key, tier, note.policy, note.source)
        track.premium += tokens * max(0.0, note.write_multiplier - 1.0)
        w = self._writes.get((note.key, tier, fp))
        if w is not None and w.judged:
            # Judged unread while this outcome was still being counted.
            self._count_unread(track, tokens)
            return
        self._open(note.key, tier, fp, track, planned=now, tokens=tokens, ttl=note.ttl_seconds)

    def _open(
        self,
        key: str,
        tier: str,
        fp: str,
        track: Track,
        *,
        planned: float,
        tokens: int,
        ttl: float = 300.0,
    ) -> None:
        """Open (or add to) the write of ``fp``, made or planned at ``planned``."""
        wkey = (key, tier, fp)
        w = self._writes.get(wkey)
        if w is None or w.judged or w.read:
            w = _Write((key, tier), fp, 0, planned, ttl, track.state == "probing")
            self._writes[wkey] = w
            if fp in track.open:
                track.open.remove(fp)
            track.open.append(fp)
            del track.open[:-OPEN_PER_TRACK]
        w.tokens += tokens
        w.at, w.ttl = planned, ttl
        self._writes.move_to_end(wkey)
        while len(self._writes) > self._capacity:
            self._writes.popitem(last=False)

    def read(self, note: GuardNote, tier: str, fp: str, tokens: int, now: float) -> None:
        """A plan under ``note`` read ``tokens`` of ``tier``'s entry ``fp`` back."""
        track = self._track(note.key, tier, note.policy, note.source)
        track.saved += tokens * max(0.0, 1.0 - note.read_multiplier)
        w = self._writes.get((note.key, tier, fp))
        if w is not None:
            w.read = True
            w.at = now  # a read refreshes the entry's TTL
            self._writes.move_to_end((note.key, tier, fp))
        if track.state != "active":
            track.state = "active"
            track.backoff = FIRST_BACKOFF
            track.probe_fp = None

    def expire(self, now: float) -> None:
        """Judge open writes whose TTL passed without a read."""
        while self._writes:
            wkey, w = next(iter(self._writes.items()))
            if now - w.at <= w.ttl:
                break
            del self._writes[wkey]
            track = self._tracks.get(w.track)
            if track is not None and not w.read and not w.judged:
                self._unread(w, track)

    def _count_unread(self, track: Track, tokens: int) -> None:
        track.unread_tokens += tokens
        label = (track.policy, track.source)
        self.unread_tokens[label] = self.unread_tokens.get(label, 0) + tokens

    def _unread(self, w: _Write, track: Track) -> None:
        w.judged = True
        track.unread_writes += 1
        self._count_unread(track, w.tokens)
        if w.fp in track.open:
            track.open.remove(w.fp)
        probe_failed = w.probe or track.state == "probing"
        losing = track.premium > track.saved or track.saved == 0
        if losing and (probe_failed or track.unread_writes >= WITHDRAW_AFTER):
            track.state = "withdrawn"
            track.wait = track.backoff
            track.backoff = min(track.backoff * 2, MAX_BACKOFF)
            track.withdrawals += 1
            track.probe_fp = None

    # ------------------------------------------------------------------ reporting
    def states(self) -> dict[tuple[str | None, Source, str, State], int]:
        """Tracks by (policy, source, tier, state)."""
        out: dict[tuple[str | None, Source, str, State], int] = {}
        for (_, tier), track in self._tracks.items():
            label = (track.policy, track.source, tier, track.state)
            out[label] = out.get(label, 0) + 1
        return out

    def tracks(self) -> list[tuple[str, str, Track]]:
        """Every (key, tier, account), least recently used first."""
        return [(key, tier, track) for (key, tier), track in self._tracks.items()]

    def track(self, key: str, tier: str) -> Track | None:
        """The account of one track (tests, ``/templates``)."""
        return self._tracks.peek((key, tier))
