"""The simulated provider's runtime: request pipeline, latency model and shared state.

Both dialects run every request through ``Simulation.serve``: read the body, apply a
fault if one is due, validate, then prefill, then answer. Prefill is where the latency
model lives: a fixed overhead, then a wait for one of a few *prefill lanes* (the shared
accelerator: under load requests queue, and cheaper prefills from cached prefixes shorten
everyone's wait), then uncached tokens at the prefill rate and cached ones at the much
faster cached rate. The cache is consulted when the lane is taken and written when the
prefill ends, which is when the response begins. Each request gets a seeded log-normal
jitter so latency distributions have a body and a tail. All sleeps are simulated
seconds times ``time_scale``; see ``docs/simulator.md`` for the calibration.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
import string
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from aiohttp import web

from .anthropic_cache import AnthropicCache
from .config import SimConfig
from .errors import ApiError, Dialect, error_response, fault_error, invalid_request
from .faults import Fault, Faults
from .metrics import Api, Recorder
from .openai_cache import OpenAICache
from .outcome import CacheOutcome

log = logging.getLogger(__name__)
ABORT_AFTER_EVENTS = 2
"""Stream events written before a ``reset-during`` fault cuts the connection."""
_ALPHABET = string.ascii_letters + string.digits
P = TypeVar("P")


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Per-request randomness, drawn once from the seed and the arrival number."""

    seq: int
    request_id: str
    fixed_factor: float
    prefill_factor: float
    decode_factor: float
    abort_during: bool = False
    """The ``reset-during`` fault: answer starts, then the connection is cut."""

    def new_id(self, prefix: str, length: int = 24) -> str:
        rng = random.Random(f"{self.request_id}:{prefix}")
        return prefix + "".join(rng.choices(_ALPHABET, k=length))


@dataclass(frozen=True, slots=True)
class Prefilled:
    outcome: CacheOutcome
    ttft_s: float
    """Simulated seconds from arrival to the first byte of the answer."""


@dataclass(frozen=True, slots=True)
class Served:
    response: web.StreamResponse
    output_tokens: int
    aborted: bool = False


@dataclass(frozen=True, slots=True)
class Route(Generic[P]):
    """How one endpoint parses, looks up the cache and answers."""

    api: Api
    dialect: Dialect
    parse: Callable[[Any, Mapping[str, str]], P]
    """Validates the JSON body; the request headers carry e.g. ``anthropic-version``."""
    resolve: Callable[[P, float], CacheOutcome]
    respond: Callable[[web.Request, P, Prefilled, RequestContext], Awaitable[Served]]


class Simulation:
    """Caches, counters, faults and prefill lanes of one simulator instance."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.clock = config.make_clock()
        self.anthropic = AnthropicCache(config.cache)
        self.openai = OpenAICache(config.cache, machines=config.machines)
        self.recorder = Recorder()
        self.faults = Faults(config.faults, seed=config.seed)
        self._lanes = asyncio.Semaphore(max(1, config.latency.prefill_lanes))
        self._seq = 0
        self.bodies: deque[Any] = deque(maxlen=max(1, config.keep_bodies))
        """The last ``keep_bodies`` request bodies (empty unless asked for)."""
        self.auth_seen: Counter[str] = Counter()
        """API requests by how they authenticated: bearer, x-api-key, none."""

    def reset(self) -> None:
        """Forget every cache entry, counter and fault count (``POST /sim/reset``)."""
        self.anthropic.clear()
        self.openai.clear()
        self.recorder.reset()
        self.faults.reset()
        self._seq = 0
        self.auth_seen.clear()

    def _context(self) -> RequestContext:
        self._seq += 1
        lat = self.config.latency
        rng = random.Random(f"{self.config.seed}:{self._seq}")
        fixed = rng.lognormvariate(0.0, lat.jitter) if lat.jitter > 0 else 1.0
        if rng.random() < lat.tail_probability:
            fixed *= lat.tail_factor
        half = lat.jitter / 2
        return RequestContext(
            seq=self._seq,
            request_id="req_" + "".join(rng.choices(_ALPHABET, k=24)),
            fixed_factor=fixed,
            prefill_factor=rng.lognormvariate(0.0, half) if half > 0 else 1.0,
            decode_factor=rng.lognormvariate(0.0, half) if half > 0 else 1.0,
        )

    async def sleep(self, simulated_s: float) -> None:
        scale = self.config.time_scale
        if scale > 0 and simulated_s > 0:
            await asyncio.sleep(simulated_s * scale)

    def decode_interval_s(self, ctx: RequestContext) -> float:
        """Simulated seconds between two stream events of ``tokens_per_event`` tokens."""
        rate = self.config.latency.decode_tokens_per_s * ctx.decode_factor
        return self.config.output.tokens_per_event / rate

    def sent_tokens(self, answer_tokens: int) -> int:
        """Output tokens a client received before a ``reset-during`` cut its stream."""
        return min(answer_tokens, ABORT_AFTER_EVENTS * self.config.output.tokens_per_event)

    def decode_s(self, ctx: RequestContext, tokens: int) -> float:
        return tokens / (self.config.latency.decode_tokens_per_s * ctx.decode_factor)

    async def prefill(
        self, ctx: RequestContext, api: Api, resolve: Callable[[float], CacheOutcome]
    ) -> Prefilled:
        """Fixed overhead, a lane, the cache lookup, prefill time, then the cache write."""
        lat = self.config.latency
        fixed_s = lat.fixed_s * ctx.fixed_factor
        await self.sleep(fixed_s)
        loop = asyncio.get_running_loop()
        queued_at = loop.time()
        metrics = self.recorder.metrics
        async with self._lanes:
            scale = self.config.time_scale
            wait_s = (loop.time() - queued_at) / scale if scale > 0 else 0.0
            metrics.prefill_wait.observe(wait_s)
            metrics.prefilling.inc()
            try:
                outcome = resolve(self.clock())
                computed = outcome.total_input - outcome.cache_read
                prefill_s = (
                    computed / lat.prefill_tokens_per_s
                    + outcome.cache_read / lat.cached_tokens_per_s
                ) * ctx.prefill_factor
                await self.sleep(prefill_s)
                outcome.commit(self.clock())
            finally:
                metrics.prefilling.dec()
        self.recorder.prefilled(api, outcome)
        ttft = fixed_s + wait_s + prefill_s
        metrics.ttft.labels(api).observe(ttft)
        return Prefilled(outcome=outcome, ttft_s=ttft)

    async def paced_write(
        self,
        request: web.Request,
        response: web.StreamResponse,
        ctx: RequestContext,
        events: Sequence[bytes],
        *,
        interval_s: float,
    ) -> bool:
        """Write ``events`` at the decode pace, batching those already due; False if cut.

        With ``ctx.abort_during`` the transport is aborted after ``ABORT_AFTER_EVENTS``.
        """
        loop = asyncio.get_running_loop()
        scale = self.config.time_scale
        real_interval = interval_s * scale
        min_gap = self.config.output.min_write_interval_s
        start = loop.time()
        limit = min(ABORT_AFTER_EVENTS, len(events)) if ctx.abort_during else len(events)
        done = 0
        while done < limit:
            if real_interval <= 0:
                due = limit
            else:
                due = min(limit, int((loop.time() - start) / real_interval))
            if due > done:
                await response.write(b"".join(events[done:due]))
                done = due
                continue
            wait = start + (done + 1) * real_interval - loop.time()
            await asyncio.sleep(max(wait, min_gap))
        if ctx.abort_during:
            abort(request)
            return False
        return True

    def authenticate(self, headers: Mapping[str, str], dialect: Dialect) -> None:
        """Count the auth scheme; with ``require_auth``, refuse a request without a key.

        Anthropic's SDK 2.x sends ``Authorization: Bearer``, older ones ``x-api-key``; the
        API takes either (``x-api-key`` wins when both are there).
        """
        bearer = headers.get("authorization", "")
        if headers.get("x-api-key"):
            scheme = "x-api-key"
        elif bearer[:7].lower() == "bearer " and bearer[7:].strip():
            scheme = "bearer"
        else:
            scheme = "none"
        self.auth_seen[scheme] += 1
        if scheme == "none" and self.config.require_auth:
            if dialect == "anthropic":
                raise ApiError(401, "authentication_error", "x-api-key header is required")
            raise ApiError(
                401,
                "invalid_request_error",
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth.",
            )

    async def serve(self, request: web.Request, route: Route[P]) -> web.StreamResponse:
        """Run one API request through faults, validation, prefill and the answer."""
        ctx = self._context()
        metrics = self.recorder.metrics
        metrics.inflight.inc()
        faulted = False
        try:
            raw = await request.read()
            fault = self.faults.decide(request.headers)
            if fault is not None:
                faulted = True
                self.recorder.fault(fault.kind)
                if fault.kind == "reset-before":
                    self.recorder.finished(route.api, "fault")
                    abort(request)
                    return web.Response(status=500)
                if fault.kind == "slow-headers":
                    # Wall seconds on purpose: this exercises clients' real timeouts.
                    await asyncio.sleep(fault.arg)
                    faulted = False
                elif fault.kind == "reset-during":
                    ctx = dataclasses.replace(ctx, abort_during=True)
                else:
                    raise fault_error(fault.kind, dialect=route.dialect, retry_after_s=fault.arg)
            self.authenticate(request.headers, route.dialect)
            try:
                body = json.loads(raw)
            except ValueError as exc:
                raise invalid_request(
                    f"There was an error parsing the body as JSON: {exc}"
                ) from exc
            if self.config.keep_bodies:
                self.bodies.append(body)
            prompt = route.parse(body, request.headers)
            prefilled = await self.prefill(ctx, route.api, lambda now: route.resolve(prompt, now))
            served = await route.respond(request, prompt, prefilled, ctx)
        except ApiError as err:
            self.recorder.finished(route.api, "fault" if faulted else "client_error")
            return error_response(err, dialect=route.dialect, request_id=ctx.request_id)
        except ConnectionResetError:
            # The client went away mid-answer. aiohttp finishes the returned response
            # quietly on a closed transport; re-raising would log a server error.
            self.recorder.finished(route.api, "aborted")
            return web.Response(status=499)
        finally:
            metrics.inflight.dec()
        self.recorder.finished(
            route.api, "fault" if served.aborted else "ok", output_tokens=served.output_tokens
        )
        return served.response


def abort(request: web.Request) -> None:
    """Cut the TCP connection without a proper end: what a network reset looks like."""
    if request.transport is not None:
        request.transport.abort()


__all__ = ["Fault", "Prefilled", "RequestContext", "Route", "Served", "Simulation", "abort"]
