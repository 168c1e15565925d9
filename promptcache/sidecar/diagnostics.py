"""Anthropic cache diagnostics, chained by the sidecar so the app does not have to.

With ``diagnostics: {"previous_message_id": ...}`` the Messages API compares a request
with the one that produced that earlier response and says why the cache could not reuse
its prefix (``cache_miss_reason``: model, system, tools or messages changed, ...; null
when nothing diverged). The API keeps a fingerprint (hashes and token estimates, no
text) of every request that carries the object, so chaining is off unless the sidecar
flag ``--anthropic-diagnostics`` turns it on, and a policy may opt out
(``anthropicDiagnostics: false``). An app that sends its own ``diagnostics`` is left
alone.

The sidecar knows which earlier response a request continues from the history it
repeats: each answered request leaves its response id under a digest of the app's
messages it answered; a later request whose messages start with those messages (the next
turn adds the answer and a new question, a tool loop the tool call and its result) finds
it. The table is bounded (LRU) and holds digests and ids only.

The provider's reason is recorded beside the sidecar's own diagnosis
(``promptcache_provider_cache_miss_reasons_total{reason, sidecar_reason}``) and a
disagreement is counted when one says the prefix changed and the other does not.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Final

from promptcache.sidecar.relay import Relayed

CHANGED: Final = frozenset({"model_changed", "system_changed", "tools_changed", "messages_changed"})
"""Provider reasons that mean the request's prefix differs from the previous one's."""
REASONS: Final = CHANGED | {"previous_message_not_found", "unavailable"}
NO_DIVERGENCE = "none"
"""The response's ``diagnostics`` was null: nothing diverged."""
PENDING = "pending"
"""``cache_miss_reason`` null: the comparison was still running when the answer left."""
LOOKBACK_MESSAGES = 8
"""How many messages back from the newest a continued request's history may end."""
CAPACITY = 10_000


@dataclass(frozen=True, slots=True)
class Link:
    """One request's place in its conversation."""

    digest: bytes
    """Names the app's messages of this request (its answer is stored under it)."""
    previous: str | None
    """The response id of the request this one continues, if the sidecar saw it."""

    def fields(self) -> dict[str, Any]:
        """The top-level field the sidecar adds to the request."""
        return {"diagnostics": {"previous_message_id": self.previous}}


def _strip(value: Any) -> Any:
    # Markers are not part of the conversation (the sidecar may add or move them).
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def message_digests(messages: list[Any]) -> list[bytes]:
    """The digest of the messages up to and including each one."""
    running = hashlib.sha256(b"promptcache-conversation")
    out: list[bytes] = []
    for message in messages:
        raw = json.dumps(_strip(message), sort_keys=True, separators=(",", ":"))
        running.update(hashlib.sha256(raw.encode()).digest())
        out.append(running.copy().digest())
    return out


class Chain:
    """Response ids by the conversation they answered; bounded, not thread-safe."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self._ids: OrderedDict[bytes, str] = OrderedDict()
        self._capacity = max(1, capacity)

    def __len__(self) -> int:
        return len(self._ids)

    def link(self, body: dict[str, Any]) -> Link | None:
        """This request's link, or ``None`` when it cannot or should not carry one."""
        messages = body.get("messages")
        if "diagnostics" in body or not isinstance(messages, list) or not messages:
            return None
        digests = message_digests(messages)
        previous = None
        for i in range(len(digests) - 2, max(-1, len(digests) - 2 - LOOKBACK_MESSAGES), -1):
            found = self._ids.get(digests[i])
            if found is not None:
                self._ids.move_to_end(digests[i])
                previous = found
                break
        return Link(digests[-1], previous)

    def remember(self, link: Link, message_id: str) -> None:
        """``message_id`` answered the request ``link`` names."""
        self._ids[link.digest] = message_id
        self._ids.move_to_end(link.digest)
        while len(self._ids) > self._capacity:
            self._ids.popitem(last=False)


MISSING: Final = object()
"""An answer without a ``diagnostics`` field (an upstream that does not know it)."""


def answer_facts(seen: Relayed) -> tuple[str | None, object]:
    """``(message id, diagnostics)`` of an answered Anthropic call.

    ``diagnostics`` is the answer's field as sent (``None``: null), or ``MISSING`` when
    the answer had none (an upstream that does not know the feature).
    """
    message: Any = seen.anthropic_message
    if message is None and seen.unread is not None:
        _, body, encoding = seen.unread
        try:
            raw = zlib.decompress(body, wbits=47) if encoding in ("gzip", "x-gzip") else body
            message = json.loads(raw) if encoding in ("", "identity", "gzip", "x-gzip") else None
        except (ValueError, zlib.error):
            message = None
    if not isinstance(message, dict):
        return None, MISSING
    message_id = message.get("id")
    return (
        message_id if isinstance(message_id, str) and len(message_id) <= 256 else None,
        message.get("diagnostics", MISSING),
    )


def provider_reason(diagnostics: object) -> str | None:
    """The bounded label of the provider's verdict; ``None`` when it gave none."""
    if diagnostics is MISSING:
        return None
    if diagnostics is None:
        return NO_DIVERGENCE
    if not isinstance(diagnostics, dict):
        return None
    reason = diagnostics.get("cache_miss_reason")
    if reason is None:
        return PENDING
    kind = reason.get("type") if isinstance(reason, dict) else None
    return kind if kind in REASONS else "other"


def disagrees(provider: str, sidecar: str | None) -> bool:
    """Whether the provider's and the sidecar's verdicts contradict each other.

    Only comparable verdicts count: the provider compared the request (a change, or
    none) and the sidecar said something about the prefix. A changed prefix is
    ``prefix_changed`` on the sidecar's side; ``ttl_expired``, ``below_minimum``,
    ``unknown`` and no miss say it was the same. ``first_write`` fits either (a prefix
    is new to the cache because it changed, or because its first write was still in
    flight), so it is never a disagreement.
    """
    if provider not in CHANGED and provider != NO_DIVERGENCE:
        return False
    if sidecar == "first_write":
        return False
    return (provider in CHANGED) != (sidecar == "prefix_changed")
