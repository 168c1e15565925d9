"""The cache planner: pure code that rewrites a request so its prefix caches.

Given a parsed request and the pod's policy it returns the request to send and a
``Plan`` saying what moved, where each breakpoint is and why. No I/O happens here,
so every rule is tested with plain data and property tests.
"""

from promptcache.sidecar.planner.common import PlanError
from promptcache.sidecar.planner.engine import Planner
from promptcache.sidecar.planner.types import (
    Breakpoint,
    ContextBlock,
    Diagnostics,
    MissReason,
    Plan,
    PlanRequest,
    PrefixChange,
    Relocation,
    Route,
    Ttl,
)

__all__ = [
    "Breakpoint",
    "ContextBlock",
    "Diagnostics",
    "MissReason",
    "Plan",
    "PlanError",
    "PlanRequest",
    "Planner",
    "PrefixChange",
    "Relocation",
    "Route",
    "Ttl",
]
