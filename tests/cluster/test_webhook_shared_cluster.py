"""The webhook is safe in a shared cluster, through the real API server's admission chain.

This module's operator runs with the chart's ClusterRole and the chart's webhook
configuration with ``failurePolicy: Fail`` (the setting under which kopf's own error
answer would reject pods), so every test here shows what the API server really does:

* fail open: any error in the webhook lets the object through unmodified, and is
  recorded (operator log line, ``promptcache_webhook_failed_open_total``, an Event);
* the app's own base URLs (``env``, ``envFrom``) are kept, and each bypass is visible
  (pod annotation, Event, metric);
* Istio- and Linkerd-shaped pods get the sidecar after the mesh's containers;
* a namespace labelled ``promptcache.io/inject=disabled`` is never sent to the webhook;
* least privilege: the operator works with exactly the chart's ClusterRole, and a call
  outside it is refused.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster.controlplane import ControlPlane
from tests.cluster.operator_harness import (
    InjectionSetup,
    Obj,
    apply,
    events_for,
    get_json,
    injection,
    wait_for,
)

INJECT = "promptcache.io/inject"


@pytest.fixture(scope="module")
def setup(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InjectionSetup]:
    with injection(
        control_plane,
        tmp_path_factory.mktemp("shared"),
        set_values=["webhook.failurePolicy=Fail"],
    ) as s:
        yield s


def create(cp: ControlPlane, obj: Obj) -> Obj:
    out: Obj = json.loads(
        cp.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(obj)).stdout
    )
    return out


def pod(name: str, ns: str, *, annotations: dict[str, str] | None = None, **spec: Any) -> Obj:
    spec.setdefault("containers", [{"name": "app", "image": "example.invalid/app:1"}])
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "annotations": annotations or {INJECT: "true"}},
        "spec": spec,
    }


def names(containers: list[Obj]) -> list[str]:
    return [c["name"] for c in containers]


def wait_event(cp: ControlPlane, ns: str, name: str, reason: str) -> Obj:
    def probe() -> Obj | None:
        return next((e for e in events_for(cp, ns, name) if e["reason"] == reason), None)

    return wait_for(probe, timeout=20, what=f"{reason} Event on {name}")


# ------------------------------------------------------------------ fail open


def test_the_configuration_under_test_fails_closed_on_its_own(setup: InjectionSetup) -> None:
    hook = get_json(setup.cp, "mutatingwebhookconfiguration", setup.webhook_name)["webhooks"][0]
    assert hook["failurePolicy"] == "Fail"


def test_an_error_in_the_webhook_lets_the_object_through_and_is_recorded(
    setup: InjectionSetup,
) -> None:
    # A second webhook routes ConfigMap CREATEs to the injector's /inject: kopf has no
    # handler for configmaps and raises. Without the guard kopf answers 404, and with
    # failurePolicy Fail the API server rejects the ConfigMap.
    cp = setup.cp
    ns = setup.namespace("pc-err")
    name = f"pc-err-{uuid.uuid4().hex[:8]}"
    hook = get_json(cp, "mutatingwebhookconfiguration", setup.webhook_name)["webhooks"][0]
    mwc = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                **hook,
                "name": "configmaps.promptcache.io",
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["configmaps"],
                        "scope": "Namespaced",
                    }
                ],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
                "objectSelector": {},
            }
        ],
    }
    before = setup.operator.metric("promptcache_webhook_failed_open_total", reason="error")
    apply(cp, mwc)
    try:
        cm = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "routed", "namespace": ns},
            "data": {"k": "v"},
        }
        created = create(cp, cm)
        assert created["data"] == {"k": "v"}
    finally:
        cp.kubectl("delete", "mutatingwebhookconfiguration", name, check=False)
    after = setup.operator.metric("promptcache_webhook_failed_open_total", reason="error")
    assert after == before + 1
    assert any(
        "failed open (error)" in line and "no handlers" in line
        for line in setup.operator.log_text().splitlines()
    )
    event = wait_event(cp, ns, "routed", "InjectionFailed")
    assert event["type"] == "Warning"
    assert event["involvedObject"]["kind"] == "ConfigMap", json.dumps(event)


def test_a_pod_the_injector_cannot_read_is_allowed_unmodified(setup: InjectionSetup) -> None:
    # Straight to the webhook (the API server would not send this shape): the handler
    # raises on a spec that is not a mapping, and the answer is still "allowed".
    before = setup.operator.metric("promptcache_webhook_failed_open_total", reason="error")
    broken = {"metadata": {"name": "b", "annotations": {INJECT: "true"}}, "spec": "garbage"}
    response = setup.operator.review(broken, namespace="default")["response"]
    assert response["allowed"] is True
    assert "patch" not in response
    assert "injector failed" in response["warnings"][0]
    after = setup.operator.metric("promptcache_webhook_failed_open_total", reason="error")
    assert after == before + 1


def test_an_absurd_memory_annotation_is_ignored_not_fatal(setup: InjectionSetup) -> None:
    cp = setup.cp
    ns = setup.namespace("pc-1ei")
    created = create(
        cp, pod("huge", ns, annotations={INJECT: "true", "promptcache.io/sidecar-memory": "1Ei"})
    )
    sidecar = created["spec"]["initContainers"][0]
    assert sidecar["name"] == "promptcache"
    assert sidecar["resources"]["requests"]["memory"] == "64Mi"


# ------------------------------------------------------------------ bypasses


def test_the_apps_own_base_urls_are_kept_and_every_bypass_is_visible(
    setup: InjectionSetup,
) -> None:
    cp = setup.cp
    ns = setup.namespace("pc-bypass")
    before = setup.operator.metric("promptcache_webhook_bypasses_total", source="envFrom")
    containers = [
        {
            "name": "gw",
            "image": "example.invalid/app:1",
            "envFrom": [{"configMapRef": {"name": "gateway"}}],
        },
        {
            "name": "own",
            "image": "example.invalid/app:1",
            "env": [{"name": "ANTHROPIC_BASE_URL", "value": "http://gateway.internal"}],
        },
    ]
    created = create(cp, pod("bypass", ns, containers=containers))
    by_name = {c["name"]: c for c in created["spec"]["containers"]}
    assert "env" not in by_name["gw"]
    assert [e["value"] for e in by_name["own"]["env"]] == [
        "http://gateway.internal",
        "http://127.0.0.1:8787/v1",
    ]
    bypass = json.loads(created["metadata"]["annotations"]["promptcache.io/bypass"])
    assert bypass == {
        "gw": {"ANTHROPIC_BASE_URL": "envFrom", "OPENAI_BASE_URL": "envFrom"},
        "own": {"ANTHROPIC_BASE_URL": "env"},
    }
    event = wait_event(cp, ns, "bypass", "SidecarBypassed")
    assert "gw: ANTHROPIC_BASE_URL (envFrom)" in event["message"]
    after = setup.operator.metric("promptcache_webhook_bypasses_total", source="envFrom")
    assert after == before + 2


# ------------------------------------------------------------------ meshes


def test_istio_shaped_pod(setup: InjectionSetup) -> None:
    ns = setup.namespace("pc-istio")
    init = [
        {"name": "istio-init", "image": "example.invalid/proxyv2:1"},
        {"name": "istio-proxy", "image": "example.invalid/proxyv2:1", "restartPolicy": "Always"},
    ]
    created = create(setup.cp, pod("istio", ns, initContainers=init))
    assert names(created["spec"]["initContainers"]) == ["istio-init", "istio-proxy", "promptcache"]


def test_linkerd_shaped_pod(setup: InjectionSetup) -> None:
    ns = setup.namespace("pc-linkerd")
    init = [
        {"name": "linkerd-init", "image": "example.invalid/proxy-init:1"},
        {"name": "linkerd-proxy", "image": "example.invalid/proxy:1", "restartPolicy": "Always"},
        {"name": "migrate", "image": "example.invalid/migrate:1"},
    ]
    created = create(setup.cp, pod("linkerd", ns, initContainers=init))
    assert names(created["spec"]["initContainers"]) == [
        "linkerd-init",
        "linkerd-proxy",
        "promptcache",
        "migrate",
    ]


# ------------------------------------------------------------------ scope


def test_a_namespace_labelled_disabled_is_never_sent_to_the_webhook(
    setup: InjectionSetup,
) -> None:
    ns = setup.namespace("pc-off", labels={INJECT: "disabled"})
    created = create(setup.cp, pod("off", ns))
    assert "initContainers" not in created["spec"]
    assert names(created["spec"]["containers"]) == ["app"]


# ------------------------------------------------------------------ least privilege


def test_the_operator_runs_with_exactly_the_charts_cluster_role(setup: InjectionSetup) -> None:
    cp = setup.cp
    kubeconfig = str(setup.operator.kubeconfig)

    def can_i(*args: str) -> str:
        proc = cp.kubectl("--kubeconfig", kubeconfig, "auth", "can-i", *args, check=False)
        return proc.stdout.strip()

    assert can_i("create", "configmaps", "-n", "default") == "yes"
    assert can_i("list", "nodes") == "yes"
    for denied in (
        ("delete", "configmaps", "-n", "default"),
        ("patch", "configmaps", "-n", "default"),
        ("get", "secrets", "-n", "kube-system"),
        ("create", "pods", "-n", "default"),
        ("update", "nodes"),
        ("delete", "promptpolicies.promptcache.io", "-n", "default"),
    ):
        assert can_i(*denied) == "no", denied
    # and a real call outside the role is refused by the API server
    ns = setup.namespace("pc-rbac")
    apply(cp, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": ns}})
    proc = cp.kubectl("--kubeconfig", kubeconfig, "delete", "configmap", "x", "-n", ns, check=False)
    assert proc.returncode != 0
    assert "Forbidden" in proc.stderr or "forbidden" in proc.stderr
    # the operator itself logged no authorization failure while doing its work (a write
    # into a namespace another test is deleting is refused as "forbidden ... being
    # terminated": the API server's namespace lifecycle, not RBAC)
    log = setup.operator.log_text()
    refused = [
        line
        for line in log.lower().splitlines()
        if "forbidden" in line and "because it is being terminated" not in line
    ]
    assert refused == [], log[-2000:]


def test_the_webhook_patch_is_applied_verbatim(setup: InjectionSetup) -> None:
    ns = setup.namespace("pc-verbatim")
    fresh = setup.operator.review(pod("x", ns), namespace=ns)["response"]
    ops = json.loads(base64.b64decode(fresh["patch"]))
    assert {op["op"] for op in ops} <= {"add", "replace"}
