"""Bookkeeping that waits for a better moment: the deferred counting of answered calls.

Counting a call is not needed to answer it. The state owns one ``Backlog``; the record
stage queues an answered call's counting here, the send stage runs it while the next
call's upstream works, and the metrics collector runs it before every scrape (its
``before_collect``), so nothing a reader sees is missing.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

log = logging.getLogger(__name__)

IDLE_DELAY = 0.005
"""Seconds a backlog waits for a better moment before it runs anyway."""


class Backlog:
    """Bookkeeping of answered calls, run off the path of the next call's request and answer.

    On a keep-alive connection the app's next request often arrives while the previous
    call is still being counted (~30 us with the planner's miss diagnosis), and waits for
    it. Queued here instead, the work runs when the proxy next sends a request upstream
    (``run_soon``: after that request is on the wire, while the upstream works on it) or,
    when no call follows, ``IDLE_DELAY`` seconds later. The metrics collector runs it
    first, so nothing a scrape reads is missing. Items run in order and never raise here.
    """

    __slots__ = ("_items", "_soon", "_timer")

    def __init__(self) -> None:
        self._items: deque[Callable[[], None]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._soon: asyncio.TimerHandle | None = None

    def add(self, work: Callable[[], None]) -> None:
        """Queue ``work`` (on the event loop); it runs within ``IDLE_DELAY`` at the latest."""
        self._items.append(work)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(IDLE_DELAY, self._on_timer)

    def run_soon(self) -> None:
        """Run the backlog on the loop's next turn, after the I/O already under way.

        Called just before the proxy awaits an upstream answer: a timer due now runs
        after the callbacks already queued (aiohttp's write of the request body), so the
        counting overlaps the upstream's work instead of delaying the request.
        """
        if self._items and self._soon is None:  # one run takes all (75 calls in flight)
            self._soon = asyncio.get_running_loop().call_later(0, self._on_soon)

    def run(self) -> None:
        """Run everything queued, oldest first."""
        items = self._items
        while items:
            work = items.popleft()
            try:
                work()
            except Exception as exc:  # counting must never stop the loop
                log.warning("deferred bookkeeping failed: %s", type(exc).__name__)

    def close(self) -> None:
        """Run what is left and drop the timers (the app is stopping)."""
        for timer in (self._timer, self._soon):
            if timer is not None:
                timer.cancel()
        self._timer = self._soon = None
        self.run()

    def _on_timer(self) -> None:
        self._timer = None
        self.run()

    def _on_soon(self) -> None:
        self._soon = None
        self.run()
