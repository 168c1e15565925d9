"""The sidecar: the caching proxy that runs next to an application.

``planner`` decides what to rewrite in a request (pure code, no I/O); ``context``
fetches per-request context in parallel; the aiohttp modules around them take the
app's calls, forward them upstream, stream the answers back and measure.
"""
