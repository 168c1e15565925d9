"""The RAG app: retrieved documents go into the user message, not the system prompt.

A policy desk for store and support staff. The system prompt is ~2,400 tokens of static
instructions (``policies/rag-static.txt``) with the current date and time on its *last*
line. Each user message carries the documents retrieved for its question (the 3 of 30
best matches, ~860 tokens) followed by the question, and the app keeps those messages in
the history as it sent them, so earlier turns' documents are re-sent, unchanged, on every
later turn. Its hand-written policy (``policies/rag.yaml``) pins the static text and
moves the timestamp behind the history.
"""

from __future__ import annotations

import random

from promptcache.demo.corpus import TOPICS, retrieve
from promptcache.demo.shapes.common import (
    ChatApp,
    Session,
    Sessions,
    generate_sessions,
    now,
    request_id,
    think_times,
)
from promptcache.demo.workload import POLICY_DIR, WorkloadConfig, _question
from promptcache.tokens import estimate_text

STATIC_FILE = POLICY_DIR / "rag-static.txt"
POLICY = POLICY_DIR / "rag.yaml"


def static_text() -> str:
    return STATIC_FILE.read_text("utf-8")


def _session(config: WorkloadConfig, rng: random.Random, user: int, index: int) -> Session:
    topic = rng.choice(TOPICS)
    n = rng.randint(*config.turns)
    questions = tuple(
        "A customer asks: " + _question(rng, topic, first=t == 0) + " What does our policy say?"
        for t in range(n)
    )
    return Session(
        user=user,
        index=index,
        key=0,
        questions=questions,
        request_ids=tuple(request_id(rng) for _ in range(n)),
        think_times=think_times(config, rng, index, n),
    )


def generate(config: WorkloadConfig) -> Sessions:
    return generate_sessions(config, lambda rng, u, i: _session(config, rng, u, i))


def user_text(question: str, k: int) -> tuple[str, int]:
    """The user message as the app builds it: documents first, then the question."""
    docs = retrieve(question, k)
    body = "\n".join(d.render() for d in docs)
    return (
        f"<documents>\n{body}\n</documents>\n\n{question}",
        sum(estimate_text(d.render()) for d in docs),
    )


class RagApp(ChatApp):
    def system(self, session: Session, turn: int) -> str:
        return static_text() + f"\n\nCurrent date and time: {now()}"

    def user_message(self, session: Session, turn: int) -> tuple[str, int]:
        return user_text(session.questions[turn], self.config.docs_per_request)
