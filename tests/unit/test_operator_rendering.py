"""PromptPolicy -> rendered ConfigMap and status, with ConfigMaps from a dict."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from promptcache_operator import rendering

from promptcache.policy import load_policy_file, parse_policy

CONFIGMAPS: dict[str, dict[str, str]] = {
    "prompts": {"system": "You are the support agent of Example Corp. " * 20, "tone": "Be kind."},
}


async def lookup(name: str) -> Mapping[str, str] | None:
    return CONFIGMAPS.get(name)


def make_policy(
    spec: dict[str, Any], *, name: str = "support", generation: int = 3
) -> dict[str, Any]:
    return {
        "apiVersion": "promptcache.io/v1alpha1",
        "kind": "PromptPolicy",
        "metadata": {
            "name": name,
            "namespace": "apps",
            "uid": "0000-1111",
            "generation": generation,
        },
        "spec": spec,
    }


SPEC = {
    "staticBlocks": [
        {
            "name": "system",
            "contentFrom": {"configMapKeyRef": {"name": "prompts", "key": "system"}},
        },
        {"name": "inline", "content": "Answer in English.", "ttl": "1h"},
        {
            "name": "tone",
            "mode": "match",
            "match": {"exactFrom": {"configMapKeyRef": {"name": "prompts", "key": "tone"}}},
        },
    ]
}


async def test_references_are_resolved_and_inlined() -> None:
    outcome = await rendering.evaluate(make_policy(SPEC), lookup)
    assert outcome.ready
    assert outcome.reason == rendering.RENDERED
    assert outcome.spec is not None
    system, inline, tone = outcome.spec.static_blocks
    assert system.content == CONFIGMAPS["prompts"]["system"]
    assert system.content_from is None
    assert inline.content == "Answer in English."
    assert tone.match is not None
    assert tone.match.exact == "Be kind."
    assert tone.match.exact_from is None
    assert rendering.references(parse_policy(SPEC)) == {"prompts"}


@pytest.mark.parametrize(
    ("ref", "reason", "text"),
    [
        (
            {"name": "absent", "key": "system"},
            rendering.CONFIGMAP_NOT_FOUND,
            "ConfigMap absent not found",
        ),
        ({"name": "prompts", "key": "nope"}, rendering.CONFIGMAP_KEY_NOT_FOUND, "has no key nope"),
    ],
)
async def test_a_missing_configmap_or_key_is_invalid_with_that_reason(
    ref: dict[str, str], reason: str, text: str
) -> None:
    spec = {"staticBlocks": [{"name": "x", "contentFrom": {"configMapKeyRef": ref}}]}
    outcome = await rendering.evaluate(make_policy(spec), lookup)
    assert not outcome.ready
    assert outcome.reason == reason
    assert text in outcome.message
    assert outcome.message.startswith("staticBlocks[0].contentFrom.configMapKeyRef")


async def test_schema_errors_are_invalid_spec_with_the_models_message() -> None:
    spec = {"staticBlocks": [{"name": "x", "content": "a"}, {"name": "x", "content": "b"}]}
    outcome = await rendering.evaluate(make_policy(spec), lookup)
    assert (outcome.ready, outcome.reason) == (False, rendering.INVALID_SPEC)
    assert "names must be unique" in outcome.message


async def test_a_file_source_cannot_be_resolved_in_a_cluster() -> None:
    spec = {"staticBlocks": [{"name": "x", "contentFrom": {"file": "system.txt"}}]}
    outcome = await rendering.evaluate(make_policy(spec), lookup)
    assert outcome.reason == rendering.INVALID_SPEC
    assert "use configMapKeyRef" in outcome.message


async def test_a_long_name_is_invalid() -> None:
    outcome = await rendering.evaluate(make_policy({}, name="p" * 64), lookup)
    assert outcome.reason == rendering.INVALID_SPEC


async def test_rendered_configmap_is_readable_by_the_sidecars_loader(tmp_path: Path) -> None:
    policy = make_policy(SPEC)
    outcome = await rendering.evaluate(policy, lookup)
    assert outcome.spec is not None
    cm = rendering.rendered_configmap(policy, outcome.spec)
    assert cm["metadata"]["name"] == "promptcache-policy-support"
    assert cm["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "promptcache",
        "promptcache.io/policy": "support",
    }
    assert cm["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "promptcache.io/v1alpha1",
            "kind": "PromptPolicy",
            "name": "support",
            "uid": "0000-1111",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert list(cm["data"]) == ["policy.yaml"]
    doc = yaml.safe_load(cm["data"]["policy.yaml"])
    assert doc["kind"] == "PromptPolicy"
    assert doc["metadata"]["name"] == "support"
    path = tmp_path / "policy.yaml"
    path.write_text(cm["data"]["policy.yaml"])
    loaded = load_policy_file(path)
    assert loaded.name == "support"
    assert loaded.spec == outcome.spec


async def test_rendering_is_deterministic() -> None:
    policy = make_policy(SPEC)
    first = await rendering.evaluate(policy, lookup)
    second = await rendering.evaluate(policy, lookup)
    assert first.spec is not None
    assert second.spec is not None
    assert rendering.rendered_configmap(policy, first.spec) == rendering.rendered_configmap(
        policy, second.spec
    )


async def test_static_figures() -> None:
    outcome = await rendering.evaluate(make_policy(SPEC), lookup)
    assert outcome.spec is not None
    texts = [CONFIGMAPS["prompts"]["system"], "Answer in English.", "Be kind."]
    assert rendering.static_tokens(outcome.spec) == sum(-(-len(t) // 4) for t in texts)
    digest = rendering.static_hash(outcome.spec)
    assert len(digest) == 16
    assert int(digest, 16) >= 0
    changed = outcome.spec.model_copy(update={"static_blocks": outcome.spec.static_blocks[:2]})
    assert rendering.static_hash(changed) != digest


async def test_status_ready_then_invalid_then_ready_again() -> None:
    ok = await rendering.evaluate(make_policy(SPEC), lookup)
    status = rendering.status_for(ok, generation=3, current=None, name="support")
    assert status["observedGeneration"] == 3
    assert status["configMap"] == "promptcache-policy-support"
    ready, invalid = status["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "True", "Rendered")
    assert (invalid["type"], invalid["status"]) == ("Invalid", "False")
    assert ready["observedGeneration"] == 3

    # Nothing changed: the same status, so nothing needs writing.
    again = rendering.status_for(ok, generation=3, current=status, name="support")
    assert again == status
    assert not rendering.status_differs(status, again)

    bad_spec = {
        "staticBlocks": [
            {"name": "x", "contentFrom": {"configMapKeyRef": {"name": "absent", "key": "k"}}}
        ]
    }
    bad = await rendering.evaluate(make_policy(bad_spec, generation=4), lookup)
    broken = rendering.status_for(bad, generation=4, current=status, name="support")
    assert rendering.status_differs(status, broken)
    ready, invalid = broken["conditions"]
    assert (ready["status"], ready["reason"]) == ("False", rendering.CONFIGMAP_NOT_FOUND)
    assert (invalid["status"], invalid["reason"]) == ("True", rendering.CONFIGMAP_NOT_FOUND)
    # The last good rendering stays: its figures are not overwritten (merge patch).
    assert "staticTokens" not in broken
    assert "configMap" not in broken


def test_unchanged_conditions_keep_their_transition_time() -> None:
    outcome = rendering.Outcome(True, rendering.RENDERED, "ok")
    old = {
        "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": "2020-01-01T00:00:00Z"},
            {"type": "Invalid", "status": "True", "lastTransitionTime": "2020-01-01T00:00:00Z"},
        ]
    }
    ready, invalid = rendering.status_for(outcome, generation=1, current=old, name="p")[
        "conditions"
    ]
    assert ready["lastTransitionTime"] == "2020-01-01T00:00:00Z"
    assert invalid["lastTransitionTime"] != "2020-01-01T00:00:00Z"  # True -> False


def test_raw_references_accepts_views_and_ignores_invalid_specs() -> None:
    from types import MappingProxyType

    assert rendering.raw_references(MappingProxyType(SPEC)) == {"prompts"}
    assert rendering.raw_references({"staticBlocks": "nonsense"}) == set()
    assert rendering.raw_references(None) == set()
