"""Cutting a prompt into the units the learner compares: lines, and sentences of long lines.

Two requests of one template are compared unit by unit, by hash. A unit is a line with
its line break; a line longer than ``LONG_LINE`` characters is cut further after each
sentence end (a full stop and a space: ``str.split``, not a regex, as this runs on every
request), so a timestamp in a one-line prompt costs one sentence, not the whole prompt.
The cut points depend only on the text around them, never on positions, so a value that
changes length does not shift
the units after it. Units concatenated give the text back exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate

LONG_LINE = 240
"""Lines longer than this (characters) are cut into sentences."""
MAX_UNITS = 1024
"""Units kept per prompt; the rest of a longer prompt is one last unit."""

SENTENCE_END = ". "
"""Where a long line is cut (after it): a full stop and a space."""


@dataclass(frozen=True, slots=True)
class Units:
    """A prompt cut into units: hashes (in-process ``hash``) and where each one ends."""

    hashes: tuple[int, ...]
    ends: tuple[int, ...]
    """``ends[i]``: offset just past unit ``i``; unit ``i`` starts at ``ends[i - 1]`` (0)."""

    def start(self, i: int) -> int:
        return self.ends[i - 1] if i else 0

    def __len__(self) -> int:
        return len(self.hashes)


def split_units(text: str) -> Units:
    """``text`` cut into units (see the module docstring)."""
    pieces = text.splitlines(keepends=True)
    if any(len(line) > LONG_LINE for line in pieces):
        cut: list[str] = []
        for line in pieces:
            if len(line) <= LONG_LINE:
                cut.append(line)
                continue
            sentences = line.split(SENTENCE_END)
            last = sentences.pop()
            cut.extend(s + SENTENCE_END for s in sentences)
            if last:
                cut.append(last)
        pieces = cut
    if len(pieces) > MAX_UNITS:
        pieces[MAX_UNITS - 1 :] = ["".join(pieces[MAX_UNITS - 1 :])]
    return Units(tuple(map(hash, pieces)), tuple(accumulate(map(len, pieces))))
