"""The operator against a real API server: PromptPolicy -> ConfigMap, status and Events.

The operator runs as a process (``promptcache operator``) on the cluster tier's control
plane; kube-controller-manager's garbage collector deletes the rendered ConfigMap with
its policy (owner reference), so no finalizer is involved.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from promptcache.policy import parse_policy
from tests.cluster.controlplane import ControlPlane, KubectlError
from tests.cluster.operator_harness import (
    InjectionSetup,
    Obj,
    apply,
    condition,
    config_map,
    events_for,
    get_json,
    get_or_none,
    injection,
    prompt_policy,
    wait_condition,
    wait_for,
)

LONG_PROMPT = "You are the support agent of Example Corp. Answer politely and precisely. " * 30


@pytest.fixture(scope="module")
def setup(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InjectionSetup]:
    with injection(control_plane, tmp_path_factory.mktemp("operator-policies")) as s:
        yield s


def rendered(cp: ControlPlane, namespace: str, name: str) -> Obj | None:
    cm = get_or_none(cp, "configmap", "-n", namespace, f"promptcache-policy-{name}")
    return None if cm is None else yaml.safe_load(cm["data"]["policy.yaml"])


def test_policy_renders_configmap_and_status_follows(setup: InjectionSetup) -> None:
    cp = setup.cp
    ns = setup.namespace("pc-pol")
    apply(
        cp,
        [
            config_map("prompts", ns, {"system": LONG_PROMPT}),
            prompt_policy(
                "support",
                ns,
                {
                    "staticBlocks": [
                        {
                            "name": "system",
                            "ttl": "1h",
                            "contentFrom": {
                                "configMapKeyRef": {"name": "prompts", "key": "system"}
                            },
                        }
                    ]
                },
            ),
        ],
    )

    obj = wait_condition(cp, ns, "support", "Ready", status="True", what="Ready policy")
    status = obj["status"]
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    assert status["configMap"] == "promptcache-policy-support"
    assert status["staticTokens"] == -(-len(LONG_PROMPT) // 4)
    assert len(status["staticHash"]) == 16
    assert condition(obj, "Invalid")["status"] == "False"

    cm = get_json(cp, "configmap", "-n", ns, "promptcache-policy-support")
    assert cm["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "promptcache",
        "promptcache.io/policy": "support",
    }
    (owner,) = cm["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "PromptPolicy",
        "support",
        obj["metadata"]["uid"],
        True,
    )
    doc = yaml.safe_load(cm["data"]["policy.yaml"])
    assert doc["metadata"]["name"] == "support"
    assert doc["spec"]["staticBlocks"][0]["content"] == LONG_PROMPT
    assert "contentFrom" not in doc["spec"]["staticBlocks"][0]
    parse_policy(doc)  # the sidecar's schema accepts it
    reasons = [e["reason"] for e in events_for(cp, ns, "support")]
    assert "Rendered" in reasons

    # The printer columns show the state.
    table = cp.kubectl("get", "promptpolicies", "-n", ns).stdout
    header, row = table.splitlines()[:2]
    assert header.split()[:4] == ["NAME", "READY", "MODE", "PROVIDER"]
    assert row.split()[:5] == [
        "support",
        "True",
        "enforce",
        "anthropic",
        str(status["staticTokens"]),
    ]

    # Update the policy: a new generation is rendered and observed.
    cp.kubectl(
        "patch", "promptpolicy", "-n", ns, "support", "--type", "merge",
        "-p", json.dumps({"spec": {"mode": "observe"}}),
    )  # fmt: skip
    wait_for(
        lambda: (rendered(cp, ns, "support") or {}).get("spec", {}).get("mode") == "observe",
        what="re-rendered ConfigMap",
    )
    obj = wait_for(
        lambda: (
            (o := get_or_none(cp, "promptpolicy", "-n", ns, "support"))
            and o["status"].get("observedGeneration") == o["metadata"]["generation"]
            and o
        ),
        what="observedGeneration to follow",
    )
    assert obj["metadata"]["generation"] == 2

    # Change the referenced ConfigMap: the policy is rendered again without a spec change.
    cp.kubectl(
        "patch", "configmap", "-n", ns, "prompts", "--type", "merge",
        "-p", json.dumps({"data": {"system": "Short and new."}}),
    )  # fmt: skip
    wait_for(
        lambda: (
            (rendered(cp, ns, "support") or {})
            .get("spec", {})
            .get("staticBlocks", [{}])[0]
            .get("content")
            == "Short and new."
        ),
        what="ConfigMap change to reach the rendered policy",
    )
    wait_for(
        lambda: (
            (get_or_none(cp, "promptpolicy", "-n", ns, "support") or {})
            .get("status", {})
            .get("staticTokens")
            == 4
        ),
        what="staticTokens to follow",
    )

    # Someone deletes the rendered ConfigMap: the operator puts it back.
    cp.kubectl("delete", "configmap", "-n", ns, "promptcache-policy-support")
    wait_for(lambda: rendered(cp, ns, "support"), what="re-created ConfigMap")

    # Delete the policy: garbage collection removes the ConfigMap (no finalizer needed).
    obj = get_json(cp, "promptpolicy", "-n", ns, "support")
    assert not obj["metadata"].get("finalizers")
    cp.kubectl("delete", "promptpolicy", "-n", ns, "support", "--wait=true", "--timeout=30s")
    wait_for(
        lambda: get_or_none(cp, "configmap", "-n", ns, "promptcache-policy-support") is None,
        timeout=60,
        what="ConfigMap garbage-collected",
    )


def test_missing_configmap_key_makes_the_policy_invalid(setup: InjectionSetup) -> None:
    cp = setup.cp
    ns = setup.namespace("pc-inv")
    apply(
        cp,
        [
            config_map("prompts", ns, {"other": "x"}),
            prompt_policy(
                "broken",
                ns,
                {
                    "staticBlocks": [
                        {
                            "name": "system",
                            "contentFrom": {
                                "configMapKeyRef": {"name": "prompts", "key": "system"}
                            },
                        }
                    ]
                },
            ),
        ],
    )
    obj = wait_condition(cp, ns, "broken", "Invalid", status="True", what="Invalid policy")
    invalid = condition(obj, "Invalid")
    assert invalid["reason"] == "ConfigMapKeyNotFound"
    assert "ConfigMap prompts has no key system" in invalid["message"]
    assert condition(obj, "Ready")["status"] == "False"
    assert get_or_none(cp, "configmap", "-n", ns, "promptcache-policy-broken") is None
    warnings = [e for e in events_for(cp, ns, "broken") if e["type"] == "Warning"]
    assert [e["reason"] for e in warnings] == ["ConfigMapKeyNotFound"]
    assert setup.operator.returncode is None  # no crash
    assert setup.operator.healthy()  # kopf's liveness endpoint

    # The key appears: the policy heals without being touched.
    cp.kubectl(
        "patch", "configmap", "-n", ns, "prompts", "--type", "merge",
        "-p", json.dumps({"data": {"system": "Now here."}}),
    )  # fmt: skip
    wait_condition(cp, ns, "broken", "Ready", status="True", what="policy to become Ready")
    assert rendered(cp, ns, "broken") is not None


def test_a_missing_configmap_and_a_late_one(setup: InjectionSetup) -> None:
    cp = setup.cp
    ns = setup.namespace("pc-late")
    spec = {
        "staticBlocks": [
            {"name": "s", "contentFrom": {"configMapKeyRef": {"name": "later", "key": "k"}}}
        ]
    }
    apply(cp, prompt_policy("late", ns, spec))
    obj = wait_condition(
        cp, ns, "late", "Invalid", reason="ConfigMapNotFound", what="ConfigMapNotFound"
    )
    assert "ConfigMap later not found" in condition(obj, "Invalid")["message"]
    apply(cp, config_map("later", ns, {"k": "v"}))
    wait_condition(
        cp, ns, "late", "Ready", status="True", what="policy Ready once the ConfigMap exists"
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {
                "staticBlocks": [
                    {
                        "name": "a",
                        "content": "x",
                        "contentFrom": {"configMapKeyRef": {"name": "c", "key": "k"}},
                    }
                ]
            },
            "mode inject needs exactly one of content or contentFrom",
        ),
        (
            {"staticBlocks": [{"name": "a", "contentFrom": {"file": "system.txt"}}]},
            "file is for local policy files; in a cluster use configMapKeyRef",
        ),
        ({"staticBlocks": [{"name": "a", "mode": "match"}]}, "mode match needs match"),
        (
            {"staticBlocks": [{"name": "a", "content": "x"}, {"name": "a", "content": "y"}]},
            "Duplicate value",
        ),
        ({"mode": "sometimes"}, 'spec.mode: Unsupported value: "sometimes"'),
        ({"staticBlocks": [{"name": "Bad Name", "content": "x"}]}, "spec.staticBlocks[0].name"),
    ],
    ids=["content-xor", "file", "match-needs-match", "duplicate-names", "enum", "pattern"],
)
def test_invalid_policies_are_rejected_at_admission(
    setup: InjectionSetup, tmp_path: Path, spec: Obj, message: str
) -> None:
    cp = setup.cp
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(yaml.safe_dump(prompt_policy("bad", "default", spec)))
    with pytest.raises(KubectlError) as excinfo:
        cp.kubectl("apply", "-f", str(manifest))
    text = str(excinfo.value)
    assert 'The PromptPolicy "bad" is invalid' in text
    assert message in text


def test_a_long_name_is_rejected_with_a_reason(setup: InjectionSetup) -> None:
    name = "p" * 64
    with pytest.raises(KubectlError, match=r"metadata\.name: at most 63 characters"):
        setup.cp.kubectl("create", "-f", "-", input=json.dumps(prompt_policy(name, "default", {})))


def test_a_rule_cel_cannot_express_marks_the_policy_invalid(setup: InjectionSetup) -> None:
    cp = setup.cp
    ns = setup.namespace("pc-tpl")
    spec = {"contextSources": [{"name": "user", "url": "http://users.local/{user_id}"}]}
    apply(cp, prompt_policy("tpl", ns, spec))
    obj = wait_condition(cp, ns, "tpl", "Invalid", status="True", what="Invalid policy")
    invalid = condition(obj, "Invalid")
    assert invalid["reason"] == "InvalidSpec"
    assert "unknown variable {user_id}" in invalid["message"]


def test_a_foreign_configmap_of_that_name_is_not_overwritten(setup: InjectionSetup) -> None:
    cp = setup.cp
    ns = setup.namespace("pc-own")
    apply(cp, config_map("promptcache-policy-mine", ns, {"policy.yaml": "hand-written"}))
    apply(cp, prompt_policy("mine", ns, {"staticBlocks": [{"name": "s", "content": "x"}]}))
    obj = wait_condition(cp, ns, "mine", "Invalid", status="True", what="Invalid policy")
    assert condition(obj, "Invalid")["reason"] == "ConfigMapConflict"
    assert "not managed by us" in condition(obj, "Invalid")["message"]
    cm = get_json(cp, "configmap", "-n", ns, "promptcache-policy-mine")
    assert cm["data"] == {"policy.yaml": "hand-written"}
