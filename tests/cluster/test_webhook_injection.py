"""Sidecar injection through the real API server's admission chain.

``kubectl annotate deployment`` -> the operator copies the annotations into the pod
template -> the Deployment rolls out -> kube-controller-manager creates the new
ReplicaSet's pods through admission -> the API server calls the operator's webhook over
TLS -> the pods (Pending: there is no kubelet) carry the sidecar. The webhook is the
chart's MutatingWebhookConfiguration with a URL client config (see
``operator_harness``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest

from promptcache import __version__
from tests.cluster.controlplane import ControlPlane
from tests.cluster.operator_harness import (
    InjectionSetup,
    Obj,
    apply,
    get_json,
    get_or_none,
    injection,
    pods_of,
    prompt_policy,
    wait_for,
)

INJECT = "promptcache.io/inject"
POLICY = "promptcache.io/policy"
STATUS = "promptcache.io/status"


@pytest.fixture(scope="module")
def setup(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InjectionSetup]:
    with injection(
        control_plane,
        tmp_path_factory.mktemp("webhook"),
        extra_excluded=["pc-excluded-by-config"],
    ) as s:
        yield s


def deployment(name: str, namespace: str, *, annotations: dict[str, str] | None = None) -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations or {}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name, "app.kubernetes.io/name": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "example.invalid/app:1",
                            "env": [
                                {"name": "OPENAI_BASE_URL", "value": "https://gateway.local/v1"}
                            ],
                        }
                    ]
                },
            },
        },
    }


def bare_pod(name: str, namespace: str, annotations: dict[str, str] | None = None) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations or {}},
        "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1"}]},
    }


def create_pod(cp: ControlPlane, pod: Obj) -> Obj:
    out: Obj = json.loads(
        cp.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(pod)).stdout
    )
    return out


def sidecar_names(pod: Obj) -> list[str]:
    spec = pod["spec"]
    return [
        c["name"]
        for key in ("initContainers", "containers")
        for c in spec.get(key, [])
        if c["name"] == "promptcache"
    ]


def env_of(container: Obj) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def template_annotations(cp: ControlPlane, ns: str, name: str) -> dict[str, str]:
    dep = get_json(cp, "deployment", "-n", ns, name)
    annotations: dict[str, str] = dep["spec"]["template"]["metadata"].get("annotations") or {}
    return annotations


def newest_pod_with(cp: ControlPlane, ns: str, app: str, predicate: Any) -> Obj | None:
    for pod in pods_of(cp, ns, f"app={app}"):
        if predicate(pod):
            return pod
    return None


def test_annotating_a_deployment_injects_its_new_pods(setup: InjectionSetup) -> None:
    cp = setup.cp
    ns = setup.namespace("pc-app")
    apply(
        cp,
        prompt_policy(
            "support", ns, {"staticBlocks": [{"name": "system", "content": "You are helpful."}]}
        ),
    )
    apply(cp, deployment("agent", ns))
    first = wait_for(lambda: pods_of(cp, ns, "app=agent"), what="first pod")[0]
    assert sidecar_names(first) == []  # not requested yet

    cp.kubectl("annotate", "deployment", "-n", ns, "agent", f"{INJECT}=true", f"{POLICY}=support")
    wait_for(
        lambda: template_annotations(cp, ns, "agent").get(POLICY) == "support",
        what="annotations copied into the pod template",
    )
    assert template_annotations(cp, ns, "agent")[INJECT] == "true"
    pod = wait_for(
        lambda: newest_pod_with(
            cp, ns, "agent", lambda p: STATUS in p["metadata"].get("annotations", {})
        ),
        timeout=60,
        what="an injected pod from the new ReplicaSet",
    )
    assert pod["status"]["phase"] == "Pending"
    owner = pod["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "ReplicaSet"
    assert owner["name"] != first["metadata"]["ownerReferences"][0]["name"]

    # Native sidecar on this 1.34 API server: first init container, restartPolicy Always.
    init = pod["spec"]["initContainers"]
    sidecar = init[0]
    assert sidecar["name"] == "promptcache"
    assert sidecar["restartPolicy"] == "Always"
    assert "--policy" in sidecar["args"]
    assert sidecar["securityContext"]["runAsNonRoot"] is True
    assert sidecar["securityContext"]["readOnlyRootFilesystem"] is True
    assert sidecar["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert sidecar["volumeMounts"][0]["mountPath"] == "/etc/promptcache/policy"
    assert [c["name"] for c in pod["spec"]["containers"]] == ["app"]
    app_env = env_of(pod["spec"]["containers"][0])
    assert app_env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:8787"
    assert app_env["OPENAI_BASE_URL"] == "https://gateway.local/v1"  # the app's own wins
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "promptcache-policy")
    assert volume["configMap"] == {
        "name": "promptcache-policy-support",
        "optional": True,
        "defaultMode": 420,
    }
    annotations = pod["metadata"]["annotations"]
    assert json.loads(annotations[STATUS]) == {
        "version": __version__,
        "policy": "support",
        "sidecar": "native",
    }
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "9787"

    # Removing the annotations from the Deployment removes them from the template.
    cp.kubectl("annotate", "deployment", "-n", ns, "agent", f"{INJECT}-", f"{POLICY}-")
    wait_for(
        lambda: not ({INJECT, POLICY} & set(template_annotations(cp, ns, "agent"))),
        what="annotations removed from the template",
    )
    dep = get_json(cp, "deployment", "-n", ns, "agent")
    assert "promptcache.io/managed-template-annotations" not in dep["metadata"].get(
        "annotations", {}
    )


def test_a_second_invocation_changes_nothing(setup: InjectionSetup) -> None:
    cp = setup.cp
    ns = setup.namespace("pc-idem")
    first = create_pod(cp, bare_pod("once", ns, {INJECT: "true", POLICY: "p"}))
    assert sidecar_names(first) == ["promptcache"]

    # Straight to the webhook: the injected pod gets no patch at all.
    response = setup.operator.review(first, namespace=ns)["response"]
    assert response["allowed"] is True
    assert "patch" not in response

    # Through the API server: the injected spec, created again, keeps one sidecar.
    again = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "twice",
            "namespace": ns,
            "annotations": first["metadata"]["annotations"],
        },
        "spec": {k: v for k, v in first["spec"].items() if k not in ("nodeName",)},
    }
    second = create_pod(cp, again)
    assert sidecar_names(second) == ["promptcache"]
    assert second["spec"]["initContainers"] == first["spec"]["initContainers"]
    assert second["spec"]["containers"] == first["spec"]["containers"]
    assert second["spec"]["volumes"] == first["spec"]["volumes"]

    # A patch the webhook does give is valid JSONPatch the API server applied verbatim.
    fresh = setup.operator.review(bare_pod("x", ns, {INJECT: "true"}), namespace=ns)["response"]
    assert fresh["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(fresh["patch"]))
    assert {op["op"] for op in ops} <= {"add", "replace"}


def test_namespace_label_opts_in_and_a_pod_can_opt_out(setup: InjectionSetup) -> None:
    cp = setup.cp
    ns = setup.namespace("pc-nsl", labels={INJECT: "enabled"})
    labelled = create_pod(cp, bare_pod("by-label", ns))
    assert sidecar_names(labelled) == ["promptcache"]
    assert (
        "--policy" not in labelled["spec"]["initContainers"][0]["args"]
    )  # no policy: none mounted
    opted_out = create_pod(cp, bare_pod("opted-out", ns, {INJECT: "false"}))
    assert sidecar_names(opted_out) == []
    plain_ns = setup.namespace("pc-plain")
    plain = create_pod(cp, bare_pod("plain", plain_ns))
    assert sidecar_names(plain) == []

    # Pods a controller creates (the namespace comes from the request URL) opt in too.
    apply(cp, deployment("labelled", ns))
    pod = wait_for(lambda: pods_of(cp, ns, "app=labelled"), what="ReplicaSet pod")[0]
    assert sidecar_names(pod) == ["promptcache"]


def test_excluded_namespaces_are_untouched(setup: InjectionSetup) -> None:
    cp = setup.cp
    # Excluded by the operator's config (the webhook is called, and declines).
    apply(
        cp,
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": "pc-excluded-by-config",
                "labels": {setup.namespace_label[0]: setup.namespace_label[1], INJECT: "enabled"},
            },
        },
    )
    pod = create_pod(cp, bare_pod("excluded", "pc-excluded-by-config", {INJECT: "true"}))
    assert sidecar_names(pod) == []
    assert STATUS not in pod["metadata"].get("annotations", {})
    # kube-system: the chart's namespace selector keeps the webhook out altogether.
    name = f"pc-kube-system-{setup.namespace_label[1][:6]}"
    try:
        pod = create_pod(cp, bare_pod(name, "kube-system", {INJECT: "true"}))
        assert sidecar_names(pod) == []
    finally:
        cp.kubectl("delete", "pod", "-n", "kube-system", name, "--wait=false", check=False)


def test_host_network_pods_are_skipped(setup: InjectionSetup) -> None:
    cp = setup.cp
    ns = setup.namespace("pc-host")
    host = bare_pod("host", ns, {INJECT: "true"})
    host["spec"]["hostNetwork"] = True
    assert sidecar_names(create_pod(cp, host)) == []


def test_pods_are_created_with_the_webhook_down(setup: InjectionSetup) -> None:
    # Runs last in this module: it stops the operator.
    cp = setup.cp
    ns = setup.namespace("pc-down")
    setup.operator.stop()
    pod = create_pod(cp, bare_pod("while-down", ns, {INJECT: "true"}))
    assert sidecar_names(pod) == []
    assert get_or_none(cp, "pod", "-n", ns, "while-down") is not None
    # The API server did call this webhook (its own port), found nobody, and failed open.
    url = setup.operator.url
    log = cp.logs["kube-apiserver"].read_text(errors="replace")
    assert any("failing open" in line and url in line for line in log.splitlines())
