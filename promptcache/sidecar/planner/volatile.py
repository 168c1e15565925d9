"""Finding cache-busting text (dates, request ids) and cutting it out of the prefix.

One timestamp at the top of a system prompt makes every request's prefix unique, so
nothing is ever read from cache. The built-in detectors find ISO 8601 / RFC 3339 and
RFC 2822 date-times, UUIDs, long hex ids and long numeric ids; a policy adds its own
regexes.

Speed matters: this runs on the request path. One regex alternation of the detectors
costs ~0.2 us per character in CPython's ``re`` (several ms for a 15 KB prompt), so
the built-ins instead find *candidates* with a single character-class scan anchored
on a digit (every built-in match contains one; a UUID or hex id without a digit is not
reported), then classify only the short token around each candidate. Results are
memoised per text, so a stable system prompt is scanned once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from promptcache.policy.schema import VolatileSpec
from promptcache.sidecar.planner.lru import TextMemo

_TOKEN_CHARS = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ:.+-_")
_CANDIDATE = re.compile(r"[0-9][0-9A-Za-z:.+_-]*")
_MONTHS = "Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec"
_DAYS = ("Mon, ", "Tue, ", "Wed, ", "Thu, ", "Fri, ", "Sat, ", "Sun, ")
_RFC2822 = re.compile(
    rf"\d{{1,2}} (?:{_MONTHS}) \d{{4}} \d{{2}}:\d{{2}}(?::\d{{2}})?(?: (?:GMT|UTC|[+-]\d{{4}}))?"
)
# Classifiers run on one short token; order decides which detector names a span.
_CLASSIFY = re.compile(
    r"(?P<datetime>(?<![0-9A-Za-z])\d{4}-\d{2}-\d{2}"
    r"(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?(?![0-9A-Za-z]))"
    r"|(?P<uuid>(?<![0-9A-Za-z])[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}"
    r"-[0-9a-fA-F]{12}(?![0-9A-Za-z]))"
    r"|(?P<hex_id>(?<![0-9A-Za-z])[0-9a-fA-F]{16,}(?![0-9A-Za-z]))"
    r"|(?P<numeric_id>(?<![0-9A-Za-z])\d{8,}(?![0-9A-Za-z]))"
)
# "2025-05-01 10:00:00" spans two tokens: a date followed by this is one date-time.
_SPACE_TIME = re.compile(
    r" \d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?(?![0-9A-Za-z])"
)
LINE_MAX = 240
"""A span on a line up to this long relocates the whole line, so the model keeps its
label (``Current date and time: ...``); on a longer line only the span moves."""
_MEMO_SIZE = 256


@dataclass(frozen=True, slots=True)
class Span:
    """A volatile span found in a text: ``text[start:end]``."""

    detector: str
    start: int
    end: int


def _builtin_spans(text: str, enabled: frozenset[str]) -> list[Span]:
    spans: list[Span] = []
    last_end = 0
    n = len(text)
    for cand in _CANDIDATE.finditer(text):
        start = cand.start()
        if start < last_end:
            continue
        tok_start = start
        while tok_start > 0 and text[tok_start - 1] in _TOKEN_CHARS:
            tok_start -= 1
        tok_end = cand.end()
        size = tok_end - tok_start
        found = False
        if size <= 2 and "datetime" in enabled and text[tok_end : tok_end + 1] == " ":
            m = _RFC2822.match(text, tok_start)
            if m is not None and (m.end() == n or not text[m.end()].isalnum()):
                s = tok_start - 5 if text[max(0, tok_start - 5) : tok_start] in _DAYS else tok_start
                spans.append(Span("datetime", s, m.end()))
                last_end = m.end()
                found = True
        if not found and size >= 8:  # every classifier needs at least 8 characters
            token = text[tok_start:tok_end]
            for m in _CLASSIFY.finditer(token):
                name = m.lastgroup
                if name is None or name not in enabled:
                    continue
                if name == "hex_id" and not any(c.isdigit() for c in m.group()):
                    continue
                end = tok_start + m.end()
                if name == "datetime" and end == tok_end and m.end() - m.start() == 10:
                    more = _SPACE_TIME.match(text, end)
                    if more is not None:
                        tok_end = end = more.end()
                spans.append(Span(name, tok_start + m.start(), end))
            last_end = tok_end
    return spans


def _merge(spans: list[Span]) -> list[Span]:
    """Sort by start and drop any span overlapping an earlier kept one."""
    out: list[Span] = []
    end = -1
    for span in sorted(spans, key=lambda s: (s.start, -s.end)):
        if span.start >= end:
            out.append(span)
            end = span.end
    return out


class Detector:
    """The compiled detectors of one ``VolatileSpec``; ``find`` is memoised per text."""

    def __init__(self, spec: VolatileSpec) -> None:
        self.spec = spec
        self.enabled = frozenset(spec.detectors)
        self.patterns = [(p.name, re.compile(p.regex)) for p in spec.patterns]
        self._memo: TextMemo[tuple[Span, ...]] = TextMemo(_MEMO_SIZE)

    @property
    def active(self) -> bool:
        return bool(self.enabled or self.patterns)

    def find(self, text: str) -> tuple[Span, ...]:
        """Non-overlapping volatile spans in ``text``, in order."""
        hit = self._memo.get(text)
        if hit is not None:
            return hit
        spans = _builtin_spans(text, self.enabled) if self.enabled else []
        for name, rx in self.patterns:
            spans.extend(
                Span(name, m.start(), m.end()) for m in rx.finditer(text) if m.end() > m.start()
            )
        result = tuple(_merge(spans))
        self._memo.put(text, result)
        return result


def relocation_units(text: str, spans: tuple[Span, ...] | list[Span]) -> list[Span]:
    """What to cut for ``spans``: the whole line when it is short, else the span.

    Spans on one short line become one unit named by the line's first span.
    """
    units: list[Span] = []
    for span in spans:
        if units and span.start < units[-1].end:
            continue
        line_start = text.rfind("\n", 0, span.start) + 1
        line_end = text.find("\n", span.end)
        if line_end < 0:
            line_end = len(text)
        if line_end - line_start <= LINE_MAX:
            units.append(Span(span.detector, line_start, line_end))
        else:
            units.append(Span(span.detector, span.start, span.end))
    return units


def cut(text: str, units: list[Span]) -> str:
    """``text`` without ``units`` (a cut whole line takes its line break along)."""
    if not units:
        return text
    parts: list[str] = []
    pos = 0
    for unit in units:
        parts.append(text[pos : unit.start])
        pos = unit.end
        whole_line = (unit.start == 0 or text[unit.start - 1] == "\n") and (
            pos == len(text) or text[pos] == "\n"
        )
        if whole_line and pos < len(text):
            pos += 1
    parts.append(text[pos:])
    return "".join(parts).strip()
