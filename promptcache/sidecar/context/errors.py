"""Why a context source failed, as one small exception tree.

    SourceError        one source failed, with a bounded ``reason`` (a metric label)
    RequiredSourceError  a required source failed: the proxy answers with a
                         provider-shaped error naming the source

Reasons are a closed set so that they can label metrics and spans; the messages never
hold variable values, URLs or fetched text.
"""

from __future__ import annotations

from typing import Literal

FailureReason = Literal[
    "missing_variable",
    "bad_variable",
    "timeout",
    "deadline",
    "unreachable",
    "status",
    "too_large",
    "not_text",
    "error",
]
"""``missing_variable``: a variable the source uses is absent or empty in the request;
``bad_variable``: a header value would hold CR/LF/NUL; ``timeout``: the last attempt ran
past the source's ``timeout``; ``deadline``: the policy's ``contextDeadline`` ended it;
``unreachable``: connection refused, reset or dropped; ``status``: a non-2xx answer
(redirects included); ``too_large``: more than ``maxBytes``; ``not_text``: a content type
that is not text; ``error``: anything else (a bug, failed open)."""


class SourceError(Exception):
    """One attempt or one source failed for ``reason`` (``status``: the HTTP status)."""

    def __init__(self, reason: FailureReason, *, status: int | None = None) -> None:
        super().__init__(reason if status is None else f"{reason} ({status})")
        self.reason: FailureReason = reason
        self.status = status


class RequiredSourceError(Exception):
    """A source declared ``required: true`` failed; the request must not go upstream."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"context source {source!r} failed: {reason}")
        self.source = source
        self.reason = reason
