"""The demo's workload as a Locust file, for a real deployment (the case study used Locust).

Each Locust user is one customer of the support agent: it takes the next conversation of
the seeded workload (``demo.workload``), sends its turns one after the other with the
legacy app's prompt (one system string, timestamp first), streams the answer with the
official ``anthropic`` SDK and keeps the reply in its history. Point ``--host`` at the
provider for the "before" run and at the sidecar (``http://127.0.0.1:8787``) for the
"after" run; nothing else changes::

    pip install locust
    locust -f promptcache/demo/locustfile.py --host http://127.0.0.1:8787 \
        -u 75 -r 10 -t 10m --headless

Locust's table gives latency percentiles and failures per request type (``stream`` is
the whole answer, ``ttft`` the time to its first text); at the end this file prints the
token cache hit rate and the cost per request from the usage the SDK received.
Settings: ``ANTHROPIC_API_KEY`` (sent as is; any value for the simulator),
``PROMPTCACHE_DEMO_SEED``, ``PROMPTCACHE_DEMO_MODEL``.
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any

import anthropic
from locust import User, between, events, task

from promptcache.demo.app import legacy_system
from promptcache.demo.corpus import retrieve
from promptcache.demo.summary import breakdown
from promptcache.demo.workload import Conversation, WorkloadConfig, generate
from promptcache.models import lookup
from promptcache.usage import from_anthropic, total

CONFIG = WorkloadConfig(
    users=1000,
    seed=int(os.environ.get("PROMPTCACHE_DEMO_SEED", "7")),
    model=os.environ.get("PROMPTCACHE_DEMO_MODEL", "claude-sonnet-4-6"),
)
WORKLOAD = generate(CONFIG)
_next_conversation = itertools.count()
_totals: list[Any] = []
_lock = threading.Lock()


class SupportCustomer(User):  # type: ignore[misc,unused-ignore]
    """One customer in a multi-turn conversation with the support agent."""

    wait_time = between(*CONFIG.think_time)

    def on_start(self) -> None:
        self._client = anthropic.Anthropic(
            base_url=self.host, api_key=os.environ.get("ANTHROPIC_API_KEY", "not-set")
        )
        self._start_conversation()

    def _start_conversation(self) -> None:
        index = next(_next_conversation) % len(WORKLOAD.conversations)
        self._conv: Conversation = WORKLOAD.conversations[index]
        self._turn = 0
        self._history: list[dict[str, str]] = list(self._conv.prior_history)

    @task  # type: ignore[untyped-decorator,unused-ignore]
    def ask(self) -> None:
        if self._turn >= len(self._conv.questions):
            self._start_conversation()
        conv, turn = self._conv, self._turn
        question = conv.questions[turn]
        system = legacy_system(
            now=datetime.now(UTC),
            request_id=conv.request_ids[turn],
            customer=conv.customer.render(),
            documents=retrieve(question, CONFIG.docs_per_request),
        )
        started = time.perf_counter()
        ttft: float | None = None
        parts: list[str] = []
        try:
            with self._client.messages.stream(
                model=CONFIG.model,
                max_tokens=CONFIG.max_tokens,
                system=system,
                messages=[*self._history, {"role": "user", "content": question}],  # type: ignore[list-item]
            ) as stream:
                for text in stream.text_stream:
                    if ttft is None:
                        ttft = time.perf_counter() - started
                    parts.append(text)
                final = stream.get_final_message()
        except anthropic.APIError as exc:
            self._fire("stream", started, 0, exc)
            self._start_conversation()
            return
        usage = from_anthropic(final.usage.model_dump())
        with _lock:
            _totals.append(usage)
        self._fire("stream", started, usage.output, None)
        if ttft is not None:
            events.request.fire(
                request_type="LLM", name="ttft", response_time=ttft * 1000, response_length=0,
                exception=None, context={},
            )  # fmt: skip
        self._history += [
            {"role": "user", "content": question},
            {"role": "assistant", "content": "".join(parts) or "(no answer)"},
        ]
        self._turn += 1

    def _fire(self, name: str, started: float, length: int, exc: Exception | None) -> None:
        events.request.fire(
            request_type="LLM",
            name=name,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=length,
            exception=exc,
            context={},
        )


@events.test_stop.add_listener  # type: ignore[untyped-decorator,unused-ignore]
def _summary(**_: Any) -> None:
    """Token cache hit rate and cost per request, from the usage the SDK received."""
    with _lock:
        usages = list(_totals)
    if not usages:
        return
    tokens = total(usages)
    cost = breakdown(tokens, len(usages), lookup("anthropic", CONFIG.model))
    sys.stdout.write(
        f"\npromptcache demo workload: {len(usages)} answers, token cache hit rate "
        f"{tokens.hit_ratio:.1%}, cost per request: input ${cost.input:.4f}, "
        f"output ${cost.output:.4f}, total ${cost.total:.4f}\n"
    )
