"""Which requests fail, and how: the per-request header and the per-run rules.

Tests and the sidecar's retry logic need failures on demand. A request asks for one with
``x-sim-fault: KIND[:ARG]`` (``429``, ``529``, ``500``, ``reset-before``,
``reset-during``, ``slow-headers:SECONDS``; ``none`` opts out of run faults). With
``x-sim-fault-count: N`` only the first N requests carrying the same
``x-sim-fault-key`` fail, so "429 once, then success" is one header set on every retry.
A run may also inject faults into a share of all requests (``--fault KIND[=ARG][:RATE]``),
drawn from the seeded generator so a run is repeatable.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

from .config import DEFAULT_FAULT_ARG, FaultKind, FaultRule, parse_fault_kind
from .errors import invalid_request

FAULT_HEADER = "x-sim-fault"
COUNT_HEADER = "x-sim-fault-count"
KEY_HEADER = "x-sim-fault-key"
_MAX_KEYS = 10_000


@dataclass(frozen=True, slots=True)
class Fault:
    """The fault chosen for one request."""

    kind: FaultKind
    arg: float
    """Retry-after seconds (429) or header delay seconds (slow-headers); else unused."""


class Faults:
    """Decides each API request's fault from its headers and the run's rules."""

    def __init__(self, rules: tuple[FaultRule, ...], *, seed: int) -> None:
        self._rules = rules
        self._seed = seed
        self._rng = random.Random(seed)
        self._used: dict[tuple[str, FaultKind], int] = {}

    def reset(self) -> None:
        self._rng = random.Random(self._seed)
        self._used.clear()

    def decide(self, headers: Mapping[str, str]) -> Fault | None:
        """The fault for a request with these headers, or None to serve it normally."""
        asked = headers.get(FAULT_HEADER)
        if asked is not None:
            return self._from_header(asked.strip(), headers)
        for rule in self._rules:
            if self._rng.random() < rule.rate:
                arg = rule.arg if rule.arg is not None else DEFAULT_FAULT_ARG.get(rule.kind, 0.0)
                return Fault(rule.kind, arg)
        return None

    def _from_header(self, value: str, headers: Mapping[str, str]) -> Fault | None:
        if value.lower() == "none":
            return None
        sep = "=" if "=" in value else ":"
        kind_text, _, arg_text = value.partition(sep)
        try:
            kind = parse_fault_kind(kind_text)
            arg = float(arg_text) if arg_text else DEFAULT_FAULT_ARG.get(kind, 0.0)
            count_text = headers.get(COUNT_HEADER)
            count = int(count_text) if count_text is not None else None
        except ValueError as exc:
            raise invalid_request(f"{FAULT_HEADER}: {exc}") from exc
        if count is not None:
            slot = (headers.get(KEY_HEADER, ""), kind)
            used = self._used.get(slot, 0)
            if used >= count:
                return None
            if len(self._used) >= _MAX_KEYS:
                self._used.clear()
            self._used[slot] = used + 1
        return Fault(kind, max(0.0, arg))
