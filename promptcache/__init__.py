"""promptcache: make LLM prompt caching happen without changing the application.

This package is the shared core that every component builds on: the policy schema
(the PromptPolicy spec), the model and pricing tables, the token estimate and the
telemetry setup. The components live beside it: ``sidecar`` (the proxy and its
planner), ``promptcache_operator`` (under ``operator/``: the kopf operator and the
injection webhook), ``simulator`` (the provider stand-in) and ``demo``.
"""

__version__ = "0.1.0"
