"""Zero-configuration caching: learning each prompt template from the app's traffic.

Pure code, no I/O: the planner hands it each request's system text and gets back which
spans are stable, which change per conversation and which per request
(``docs/learning.md``). It holds hashes and lengths, never prompt text.
"""

from promptcache.sidecar.learner.learner import (
    MAX_CANDIDATES,
    MAX_TEMPLATES,
    MAX_UNITS,
    Learner,
    Partition,
    SpanShape,
    TemplateShape,
)
from promptcache.sidecar.learner.template import Split

__all__ = [
    "MAX_CANDIDATES",
    "MAX_TEMPLATES",
    "MAX_UNITS",
    "Learner",
    "Partition",
    "SpanShape",
    "Split",
    "TemplateShape",
]
