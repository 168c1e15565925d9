"""PromptPolicy -> the rendered ConfigMap and the status to write back.

Everything here is plain data in, plain data out, apart from :func:`resolve`, which reads
referenced ConfigMap keys through a caller-supplied async lookup. The kopf handlers (and
their tests) stay thin: validate, resolve, render, then write what this module computed.

The rendered ConfigMap ``promptcache-policy-<name>`` holds one key, ``policy.yaml``: a
whole PromptPolicy object whose ``configMapKeyRef`` texts are inlined, which the
sidecar's ``promptcache.policy.load_policy_file`` reads as it is.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from promptcache.contract import MANAGED_BY_LABEL
from promptcache.contract import MANAGED_BY_VALUE as MANAGED_BY_VALUE
from promptcache.contract import POLICY_KEY as POLICY_KEY
from promptcache.contract import POLICY_LABEL as POLICY_LABEL
from promptcache.contract import configmap_name as configmap_name
from promptcache.policy import PolicyError, PolicySpec, parse_policy
from promptcache.policy.sources import SourceRef, resolve_async, source_refs
from promptcache.tokens import estimate_text
from promptcache_operator.crd import GROUP, KIND, MAX_NAME_LENGTH, VERSION

MANAGED_BY = MANAGED_BY_LABEL

# Condition reasons (CamelCase, as Kubernetes conventions ask).
RENDERED = "Rendered"
VALID = "Valid"
INVALID_SPEC = "InvalidSpec"
CONFIGMAP_NOT_FOUND = "ConfigMapNotFound"
CONFIGMAP_KEY_NOT_FOUND = "ConfigMapKeyNotFound"

# name, key -> the ConfigMap's data (None: no such ConfigMap).
ConfigMapLookup = Callable[[str], Awaitable[Mapping[str, str] | None]]


class Unresolvable(PolicyError):  # noqa: N818 - it is a reason, not a crash
    """A referenced ConfigMap or key is missing; ``reason`` is the condition reason."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def references(spec: PolicySpec) -> set[str]:
    """Names of the ConfigMaps a policy reads (in its own namespace)."""
    return {
        ref.source.config_map_key_ref.name
        for ref in source_refs(spec)
        if ref.source.config_map_key_ref is not None
    }


def raw_references(spec: Any) -> set[str]:
    """Like :func:`references` on a raw (unvalidated) spec; invalid parts are skipped."""
    if isinstance(spec, Mapping):  # kopf hands a read-only view, the schema wants a dict
        spec = dict(spec)
    try:
        return references(parse_policy(spec or {}, place="cluster"))
    except PolicyError:
        return set()


def reader(lookup: ConfigMapLookup) -> Callable[[SourceRef], Awaitable[str]]:
    """How the operator reads a text reference: a key of a ConfigMap, through ``lookup``."""

    async def read(source: SourceRef) -> str:
        ref = source.source.config_map_key_ref
        where = f"{source.where}.configMapKeyRef"
        if ref is None:  # parse_policy(place="cluster") refused ``file`` already
            raise PolicyError(f"{source.where}.file: only in local policy files")
        data = await lookup(ref.name)
        if data is None:
            raise Unresolvable(
                f"{where}: ConfigMap {ref.name} not found", reason=CONFIGMAP_NOT_FOUND
            )
        if ref.key not in data:
            raise Unresolvable(
                f"{where}: ConfigMap {ref.name} has no key {ref.key}",
                reason=CONFIGMAP_KEY_NOT_FOUND,
            )
        return data[ref.key]

    return read


async def resolve(spec: PolicySpec, lookup: ConfigMapLookup) -> PolicySpec:
    """Inline every ``configMapKeyRef`` text; raise ``Unresolvable`` naming the first gap."""
    return await resolve_async(spec, reader(lookup))


def static_texts(spec: PolicySpec) -> list[tuple[str, str, str]]:
    """``(name, ttl, text)`` of each static block whose text the policy knows."""
    out: list[tuple[str, str, str]] = []
    for block in spec.static_blocks:
        text = block.content
        if text is None and block.match is not None:
            # A sha256 match pins a text the policy does not know: nothing to count.
            text = block.match.exact or block.match.prefix
        if text is not None:
            out.append((block.name, block.ttl, text))
    return out


def static_tokens(spec: PolicySpec) -> int:
    """Estimated tokens of the static blocks (``promptcache.tokens``)."""
    return sum(estimate_text(text) for _, _, text in static_texts(spec))


def static_hash(spec: PolicySpec) -> str:
    """16 hex digits of sha256 over the static blocks (name, TTL and text, in order)."""
    canonical = json.dumps(static_texts(spec), ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def policy_document(*, name: str, namespace: str, spec: PolicySpec) -> dict[str, Any]:
    """The whole PromptPolicy object written to ``policy.yaml``."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec.model_dump(mode="json", by_alias=True, exclude_none=True),
    }


def render_policy_yaml(*, name: str, namespace: str, spec: PolicySpec) -> str:
    doc = policy_document(name=name, namespace=namespace, spec=spec)
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)


def owner_reference(policy: Mapping[str, Any]) -> dict[str, Any]:
    meta = policy["metadata"]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def rendered_configmap(policy: Mapping[str, Any], spec: PolicySpec) -> dict[str, Any]:
    """The ConfigMap object (without resourceVersion) for a resolved spec."""
    meta = policy["metadata"]
    name, namespace = str(meta["name"]), str(meta["namespace"])
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": configmap_name(name),
            "namespace": namespace,
            "labels": {MANAGED_BY: MANAGED_BY_VALUE, POLICY_LABEL: name},
            "ownerReferences": [owner_reference(policy)],
        },
        "data": {POLICY_KEY: render_policy_yaml(name=name, namespace=namespace, spec=spec)},
    }


@dataclass(frozen=True, slots=True)
class Outcome:
    """What reconciling one generation of a policy came to."""

    ready: bool
    reason: str
    message: str
    spec: PolicySpec | None = None
    """The resolved spec (set when ready)."""


async def evaluate(policy: Mapping[str, Any], lookup: ConfigMapLookup) -> Outcome:
    """Validate and resolve a PromptPolicy object; never raises for a bad policy."""
    name = str(policy["metadata"]["name"])
    if len(name) > MAX_NAME_LENGTH:
        return Outcome(False, INVALID_SPEC, f"metadata.name: at most {MAX_NAME_LENGTH} characters")
    try:
        spec = await resolve(parse_policy(policy.get("spec") or {}, place="cluster"), lookup)
    except Unresolvable as exc:
        return Outcome(False, exc.reason, str(exc))
    except PolicyError as exc:
        return Outcome(False, INVALID_SPEC, str(exc))
    message = f"rendered into ConfigMap {configmap_name(name)}"
    return Outcome(True, RENDERED, message, spec)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(
    kind: str,
    status: bool,
    reason: str,
    message: str,
    generation: int,
    old: Mapping[str, Any] | None,
) -> dict[str, Any]:
    text = "True" if status else "False"
    since = None
    if old is not None and old.get("status") == text:
        since = old.get("lastTransitionTime")
    return {
        "type": kind,
        "status": text,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since or _now(),
        "observedGeneration": generation,
    }


def status_for(
    outcome: Outcome, *, generation: int, current: Mapping[str, Any] | None, name: str
) -> dict[str, Any]:
    """The ``status`` to write: conditions keep their transition time when unchanged.

    An Invalid outcome keeps the previous static figures and ConfigMap name: the last
    good rendering stays mounted in running pods, and the status says so.
    """
    current = current or {}
    old = {c.get("type"): c for c in current.get("conditions") or [] if isinstance(c, dict)}
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "conditions": [
            _condition(
                "Ready",
                outcome.ready,
                outcome.reason,
                outcome.message,
                generation,
                old.get("Ready"),
            ),
            _condition(
                "Invalid",
                not outcome.ready,
                outcome.reason if not outcome.ready else VALID,
                outcome.message if not outcome.ready else "the spec and its references are valid",
                generation,
                old.get("Invalid"),
            ),
        ],
    }
    if outcome.spec is not None:
        status["configMap"] = configmap_name(name)
        status["staticTokens"] = static_tokens(outcome.spec)
        status["staticHash"] = static_hash(outcome.spec)
    return status


def status_differs(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> bool:
    """Whether writing ``desired`` would change anything we own (ignoring kopf's fields)."""
    current = current or {}
    return any(current.get(k) != v for k, v in desired.items())
