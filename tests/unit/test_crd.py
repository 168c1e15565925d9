"""The PromptPolicy CRD: generated from the policy schema, structural, and checked in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from promptcache_operator import crd

from promptcache.policy.schema import PolicySpec

REPO = Path(__file__).resolve().parents[2]


def nodes(schema: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its path."""
    if not isinstance(schema, dict):
        return
    yield path, schema
    for name, sub in (schema.get("properties") or {}).items():
        yield from nodes(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from nodes(schema["additionalProperties"], f"{path}{{}}")


def test_checked_in_crd_is_current() -> None:
    path = REPO / crd.CHART_CRD_PATH
    assert path.exists(), f"missing {crd.CHART_CRD_PATH}; run: {crd.REGENERATE_COMMAND}"
    assert path.read_text() == crd.render(), (
        f"{crd.CHART_CRD_PATH} is stale (the policy schema changed); run: {crd.REGENERATE_COMMAND}"
    )


def test_names_follow_the_contract() -> None:
    obj = crd.crd()
    assert obj["metadata"]["name"] == "promptpolicies.promptcache.io"
    spec = obj["spec"]
    assert spec["group"] == "promptcache.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "PromptPolicy"
    assert spec["names"]["plural"] == "promptpolicies"
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1"
    assert version["served"]
    assert version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == ["Ready", "Reason", "Mode", "Provider", "Static tokens", "Age"]


def spec_schema() -> dict[str, Any]:
    schema: dict[str, Any] = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_schema_is_structural() -> None:
    for path, node in nodes(spec_schema()):
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), path
        for key in ("$ref", "$defs", "anyOf", "oneOf", "allOf", "title", "examples"):
            assert key not in node, f"{path} has {key}"
        assert node.get("additionalProperties") is not False, path
        assert not ("properties" in node and "additionalProperties" in node), path
        if "default" in node:
            assert not isinstance(node["default"], (dict, list))
            assert node["default"] is not None


def test_unknown_fields_are_preserved_only_for_kopf_and_free_form_bodies() -> None:
    preserved = [
        p for p, n in nodes(spec_schema()) if n.get("x-kubernetes-preserve-unknown-fields")
    ]
    # A context source's POST body is the user's own JSON; kopf's status is kopf's.
    assert preserved == [".spec.contextSources[].body", ".status.kopf"]


def test_every_model_field_is_in_the_spec_schema() -> None:
    spec = spec_schema()["properties"]["spec"]
    expected = {f.alias or name for name, f in PolicySpec.model_fields.items()}
    assert set(spec["properties"]) == expected
    block = spec["properties"]["staticBlocks"]["items"]
    assert block["required"] == ["name"]
    assert block["properties"]["ttl"]["enum"] == ["5m", "1h", "auto"]
    assert block["properties"]["content"]["nullable"] is True
    assert spec["properties"]["staticBlocks"]["maxItems"] == 16


def test_named_lists_reject_duplicate_names() -> None:
    maps = {
        p: n["x-kubernetes-list-map-keys"]
        for p, n in nodes(spec_schema())
        if n.get("x-kubernetes-list-type") == "map"
    }
    assert maps == {
        ".spec.staticBlocks": ["name"],
        ".spec.volatile.patterns": ["name"],
        ".spec.contextSources": ["name"],
        ".spec.contextVariables": ["name"],
        ".status.conditions": ["type"],
    }


def test_cel_rules_mirror_the_model_validators() -> None:
    rules = {
        p: [r["message"] for r in n["x-kubernetes-validations"]]
        for p, n in nodes(spec_schema())
        if "x-kubernetes-validations" in n
    }
    block = rules[".spec.staticBlocks[]"]
    assert "mode inject needs exactly one of content or contentFrom" in block
    assert "mode match needs match" in block
    assert rules[".spec.staticBlocks[].contentFrom"] == [
        "set exactly one of configMapKeyRef or file",
        "file is for local policy files; in a cluster use configMapKeyRef",
    ]
    assert rules[".spec.staticBlocks[].match"] == [
        "use at most one of exact, exactFrom, prefix, sha256"
    ]
    assert rules[".spec.contextVariables[]"] == ["from: field needs field (e.g. metadata.user_id)"]
    assert rules[""][0].startswith("metadata.name: at most 63 characters")


def test_descriptions_come_from_the_models_docstrings() -> None:
    spec = spec_schema()["properties"]["spec"]
    assert "observe" in spec["properties"]["mode"]["description"]
    assert spec["properties"]["staticBlocks"]["items"]["description"].startswith("A named")


def test_rendered_yaml_has_a_regeneration_header() -> None:
    text = crd.render()
    assert text.startswith("# Generated from promptcache.policy.schema.PolicySpec")
    assert crd.REGENERATE_COMMAND in text.splitlines()[1]
    assert yaml.safe_load(text) == crd.crd()
