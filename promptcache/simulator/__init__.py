"""A local stand-in for the Anthropic and OpenAI APIs that behaves like them wherever
prompt caching is concerned: request validation, cache reads and writes, usage fields,
stream event sequences, error bodies, latency and faults.

It lets the demo, the tests and the benchmarks run without an API key or network, and
it is deliberately faithful to the documented rules (``docs/simulator.md``), so that what
the sidecar achieves against it is what it would achieve against the real providers.
"""

from .config import (
    CacheConfig,
    FaultRule,
    LatencyConfig,
    ManualClock,
    OutputConfig,
    SimConfig,
    parse_fault_rule,
)
from .server import SIMULATION, SimServer, create_app, stats

__all__ = [
    "SIMULATION",
    "CacheConfig",
    "FaultRule",
    "LatencyConfig",
    "ManualClock",
    "OutputConfig",
    "SimConfig",
    "SimServer",
    "create_app",
    "parse_fault_rule",
    "stats",
]
