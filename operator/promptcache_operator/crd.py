"""The PromptPolicy CustomResourceDefinition, generated from the policy schema.

One source of truth: the spec's OpenAPI schema is derived from
``promptcache.policy.schema.PolicySpec`` (the model the sidecar and the operator validate
with), turned into a Kubernetes *structural* schema:

* ``$ref``/``$defs`` are inlined (structural schemas have no references);
* ``anyOf: [X, {type: null}]`` (an optional field) becomes ``X`` with ``nullable: true``;
* ``additionalProperties: false`` is dropped (the API server prunes unknown fields and
  ``kubectl`` rejects them with field validation), JSON-schema-only keywords (``title``,
  ``examples``) are dropped, and only scalar, non-null defaults are kept, so the API
  server fills in e.g. ``mode: enforce`` (visible in ``kubectl get``) without
  materialising whole default objects;
* lists of named items become ``x-kubernetes-list-type: map`` keyed by ``name``, which
  makes the API server reject duplicate names (mirroring the model's uniqueness rules)
  and lets server-side apply merge items by name;
* the model's cross-field rules that CEL can express become ``x-kubernetes-validations``
  with the same messages, so a bad policy is refused at ``kubectl apply`` rather than
  marked Invalid afterwards. Rules CEL cannot express (regexes that must compile,
  ``{var}`` templates naming declared variables) are checked by the operator, which
  marks the policy Invalid with the model's message.

``python -m promptcache_operator.crd > charts/promptcache/crds/promptpolicies.promptcache.io.yaml``
regenerates the checked-in file; a unit test fails when it is stale.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import yaml

from promptcache.contract import MAX_POLICY_NAME
from promptcache.policy.schema import PolicySpec

GROUP = "promptcache.io"
VERSION = "v1alpha1"
KIND = "PromptPolicy"
PLURAL = "promptpolicies"
SINGULAR = "promptpolicy"
SHORT_NAMES = ["ppol"]
CRD_NAME = f"{PLURAL}.{GROUP}"
CHART_CRD_PATH = f"charts/promptcache/crds/{CRD_NAME}.yaml"
REGENERATE_COMMAND = f".venv/bin/python -m promptcache_operator.crd > {CHART_CRD_PATH}"

MAX_NAME_LENGTH = MAX_POLICY_NAME
"""A policy's name becomes a label value and the ``policy`` metric label: at most 63."""

_DROPPED_KEYS = {"title", "examples", "additionalProperties", "$defs"}

# Lists whose items are identified by their ``name`` (the model requires unique names).
_NAMED_LISTS = {"staticBlocks", "contextSources", "contextVariables", "patterns"}

_MODE = "(has(self.mode) ? self.mode : 'inject')"

# CEL rules per model (``$defs`` name, or ``PolicySpec`` for the root of ``spec``), each
# the counterpart of a pydantic validator, with the same message.
RULES: dict[str, list[dict[str, str]]] = {
    "ContentSource": [
        {
            "rule": "has(self.configMapKeyRef) != has(self.file)",
            "message": "set exactly one of configMapKeyRef or file",
        },
        {
            "rule": "!has(self.file)",
            "message": "file is for local policy files; in a cluster use configMapKeyRef",
        },
    ],
    "Match": [
        {
            "rule": "[has(self.exact), has(self.exactFrom), has(self.prefix), "
            "has(self.sha256)].filter(x, x).size() <= 1",
            "message": "use at most one of exact, exactFrom, prefix, sha256",
        },
    ],
    "StaticBlock": [
        {
            "rule": f"{_MODE} != 'inject' || has(self.content) != has(self.contentFrom)",
            "message": "mode inject needs exactly one of content or contentFrom",
        },
        {
            "rule": f"{_MODE} != 'inject' || !has(self.match)",
            "message": "match is only for mode match",
        },
        {
            "rule": f"{_MODE} != 'match' || has(self.match)",
            "message": "mode match needs match",
        },
        {
            "rule": f"{_MODE} != 'match' || (!has(self.content) && !has(self.contentFrom))",
            "message": "mode match takes no content: the app sends the block",
        },
    ],
    "ContextVariable": [
        {
            "rule": "!has(self.from) || self.from != 'field' || has(self.field)",
            "message": "from: field needs field (e.g. metadata.user_id)",
        },
    ],
}

ROOT_RULES = [
    {
        "rule": f"size(self.metadata.name) <= {MAX_NAME_LENGTH}",
        "message": f"metadata.name: at most {MAX_NAME_LENGTH} characters (the name is used "
        "as a label value and a metric label)",
    },
]


def _structural(node: Any, defs: dict[str, Any], name: str | None = None) -> Any:
    """One JSON-schema node as a structural OpenAPI v3 node (recursively)."""
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        ref = str(node["$ref"]).rsplit("/", 1)[-1]
        merged = {**copy.deepcopy(defs[ref]), **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs, ref)
    any_of = node.get("anyOf")
    if isinstance(any_of, list):
        others = [x for x in any_of if x != {"type": "null"}]
        if len(others) != 1:
            raise ValueError(f"cannot express anyOf {any_of!r} structurally")
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        inner = _structural(others[0], defs)
        merged = {**inner, **rest}
        if len(others) < len(any_of):
            merged["nullable"] = True
        return _structural(merged, defs, name)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS:
            continue
        if key == "default":
            if value is None or isinstance(value, (dict, list)):
                continue
            out[key] = value
        elif key == "properties":
            props = {k: _structural(v, defs) for k, v in value.items()}
            for list_name in _NAMED_LISTS & props.keys():
                props[list_name]["x-kubernetes-list-type"] = "map"
                props[list_name]["x-kubernetes-list-map-keys"] = ["name"]
            out[key] = props
        elif key == "items":
            out[key] = _structural(value, defs)
        else:
            out[key] = value
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = _structural(node["additionalProperties"], defs)
    if name is not None and name in RULES:
        out["x-kubernetes-validations"] = copy.deepcopy(RULES[name])
    return out


def spec_schema() -> dict[str, Any]:
    """The structural OpenAPI v3 schema of ``spec``, from :class:`PolicySpec`."""
    raw = PolicySpec.model_json_schema(by_alias=True)
    defs = raw.get("$defs", {})
    return dict(_structural(raw, defs, "PolicySpec"))


def _condition_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["type", "status"],
        "properties": {
            "type": {"type": "string", "description": "Ready or Invalid."},
            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "reason": {"type": "string", "description": "One CamelCase word."},
            "message": {"type": "string", "description": "What happened, on one line."},
            "lastTransitionTime": {"type": "string", "format": "date-time"},
            "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0},
        },
    }


def status_schema() -> dict[str, Any]:
    """What the operator writes back (and room for kopf's own bookkeeping)."""
    return {
        "type": "object",
        "description": "Written by the operator.",
        "properties": {
            "observedGeneration": {
                "type": "integer",
                "format": "int64",
                "description": "The metadata.generation this status describes.",
            },
            "conditions": {
                "type": "array",
                "description": "Ready: rendered into the ConfigMap. Invalid: why it cannot be.",
                "items": _condition_schema(),
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
            "configMap": {
                "type": "string",
                "description": "The rendered ConfigMap (key policy.yaml) that sidecars mount.",
            },
            "staticTokens": {
                "type": "integer",
                "description": "Estimated tokens of the policy's static blocks (~4 chars/token).",
            },
            "staticHash": {
                "type": "string",
                "description": "sha256 (16 hex digits) of the static blocks: changes exactly "
                "when the cached prefix the policy pins changes.",
            },
            "kopf": {
                "type": "object",
                "description": "kopf's handler progress (internal).",
                "x-kubernetes-preserve-unknown-fields": True,
            },
        },
    }


def crd() -> dict[str, Any]:
    """The whole CustomResourceDefinition object."""
    schema = {
        "type": "object",
        "description": "How the promptcache sidecar rewrites an app's LLM requests so that "
        "the provider can serve the unchanging prefix from its prompt cache.",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema(),
            "status": status_schema(),
        },
        "x-kubernetes-validations": copy.deepcopy(ROOT_RULES),
    }
    columns = [
        {
            "name": "Ready",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        },
        {
            "name": "Reason",
            "type": "string",
            "priority": 1,
            "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
        },
        {"name": "Mode", "type": "string", "jsonPath": ".spec.mode"},
        {"name": "Provider", "type": "string", "jsonPath": ".spec.provider"},
        {"name": "Static tokens", "type": "integer", "jsonPath": ".status.staticTokens"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {
                "app.kubernetes.io/name": "promptcache",
                "app.kubernetes.io/part-of": "promptcache",
            },
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": SHORT_NAMES,
                "categories": ["promptcache"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


HEADER = (
    "# Generated from promptcache.policy.schema.PolicySpec; do not edit by hand.\n"
    f"# Regenerate: {REGENERATE_COMMAND}\n"
)


def render() -> str:
    """The CRD as the YAML document checked in under the chart's ``crds/``."""
    return HEADER + yaml.safe_dump(crd(), sort_keys=False, width=100, allow_unicode=True)


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
