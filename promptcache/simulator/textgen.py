"""The simulated model's answer: filler text, the same for the same seed and prompt;
a cut answer is a prefix of the full one.

Its content does not matter, only that it is deterministic (reproducible runs, stable
test expectations), cheap (no per-request work beyond picking words) and of a known
length: each piece below is one output token, so ``output_tokens`` equals the number of
pieces produced. The natural length lies between two bounds and ``max_tokens`` may cut
it short, which is when the stop reason says so.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .config import OutputConfig

_WORDS = (
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
    "ut",
    "labore",
    "et",
    "dolore",
    "magna",
    "aliqua",
    "enim",
    "ad",
    "minim",
    "veniam",
    "quis",
    "nostrud",
    "exercitation",
    "ullamco",
    "laboris",
    "nisi",
    "aliquip",
    "ex",
    "ea",
    "commodo",
    "consequat",
    "duis",
    "aute",
    "irure",
    "in",
    "reprehenderit",
    "voluptate",
    "velit",
    "esse",
    "cillum",
    "fugiat",
    "nulla",
    "pariatur",
    "excepteur",
    "sint",
    "occaecat",
    "cupidatat",
    "non",
    "proident",
    "sunt",
    "culpa",
    "qui",
    "officia",
    "deserunt",
    "mollit",
    "anim",
    "id",
    "est",
    "order",
    "refund",
    "policy",
    "account",
    "shipping",
    "support",
    "ticket",
    "customer",
    "help",
    "thanks",
)
_SENTENCE = 14


@dataclass(frozen=True, slots=True)
class Answer:
    pieces: tuple[str, ...]
    """One string per output token; joined they are the answer text."""
    truncated: bool
    """True when ``max_tokens`` ended the answer before its natural end."""

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def answer(*, seed: int, digest: bytes, limit: int | None, config: OutputConfig) -> Answer:
    """The answer to the prompt named by ``digest``, cut at ``limit`` tokens."""
    rng = random.Random(int.from_bytes(digest[:8], "big") ^ seed)
    natural = rng.randint(config.min_tokens, max(config.min_tokens, config.max_tokens))
    n = natural if limit is None else min(limit, natural)
    words = rng.choices(_WORDS, k=n)
    pieces: list[str] = []
    for i, word in enumerate(words):
        start = i % _SENTENCE == 0
        end = i % _SENTENCE == _SENTENCE - 1 or i == natural - 1
        token = word.capitalize() if start else word
        pieces.append(("" if i == 0 else " ") + token + ("." if end else ""))
    return Answer(pieces=tuple(pieces), truncated=n < natural)
