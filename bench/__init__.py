"""Benchmarks run by ``make bench`` (``python -m bench``): figures and a report, never a test.

``overhead`` measures what the sidecar adds to an LLM call against the direct path and
nginx (the floor for a proxy hop), in one run on one machine; ``context_bench``
measures parallel context prefetch.
"""
