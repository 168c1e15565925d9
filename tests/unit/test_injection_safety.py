"""Injection rules that keep a shared cluster safe (issue: safe to install in a shared
cluster): mesh ordering, Job pods in container mode, the app's own base URLs, bounded
resource annotations, volume names, namespaces, and the sidecar's mode flags."""

from __future__ import annotations

import json
from typing import Any

import pytest
from promptcache_operator.settings import parse_injector_config
from promptcache_operator.webhook.injection import Injector, inject

OPT_IN = {"promptcache.io/inject": "true", "promptcache.io/policy": "support"}


def injector(*, native: bool = True, **config: Any) -> Injector:
    return Injector(
        config=parse_injector_config(config), native=native, version="1", operator_namespace="pc"
    )


def pod(
    *,
    annotations: dict[str, str] | None = None,
    containers: list[dict[str, Any]] | None = None,
    init: list[dict[str, Any]] | None = None,
    owner: str | None = None,
    volumes: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"generateName": "app-", "annotations": dict(annotations or OPT_IN)}
    if owner:
        meta["ownerReferences"] = [
            {"apiVersion": "batch/v1", "kind": owner, "name": "o", "uid": "u", "controller": True}
        ]
    spec: dict[str, Any] = {"containers": containers or [{"name": "app", "image": "a"}]}
    if init is not None:
        spec["initContainers"] = init
    if volumes is not None:
        spec["volumes"] = volumes
    return {"metadata": meta, "spec": spec}


def run(p: dict[str, Any], inj: Injector | None = None, **kw: Any) -> tuple[dict[str, Any], Any]:
    kw.setdefault("namespace", "apps")
    return inject(p, namespace_labels=kw.pop("labels", None), injector=inj or injector(), **kw)


def names(containers: list[dict[str, Any]]) -> list[str]:
    return [c["name"] for c in containers]


# ------------------------------------------------------------------ meshes


def test_istio_shaped_pod_native_sidecar_goes_after_istio_init_and_proxy() -> None:
    istio = pod(
        init=[
            {"name": "istio-init", "image": "proxyv2"},
            {"name": "istio-proxy", "image": "proxyv2", "restartPolicy": "Always"},
            {"name": "migrate", "image": "m"},
        ]
    )
    out, _ = run(istio)
    assert names(out["spec"]["initContainers"]) == [
        "istio-init",
        "istio-proxy",
        "promptcache",
        "migrate",
    ]


def test_linkerd_shaped_pod_container_mode_goes_after_the_proxy() -> None:
    linkerd = pod(
        init=[{"name": "linkerd-init", "image": "proxy-init"}],
        containers=[{"name": "linkerd-proxy", "image": "proxy"}, {"name": "app", "image": "a"}],
    )
    out, _ = run(linkerd, injector(native=False))
    assert names(out["spec"]["initContainers"]) == ["linkerd-init"]
    assert names(out["spec"]["containers"]) == ["linkerd-proxy", "promptcache", "app"]
    # the mesh proxy is not an app: it gets no base URL
    assert "env" not in out["spec"]["containers"][0]


def test_without_a_mesh_the_native_sidecar_is_first() -> None:
    out, _ = run(pod(init=[{"name": "migrate", "image": "m"}]))
    assert names(out["spec"]["initContainers"]) == ["promptcache", "migrate"]


# ------------------------------------------------------------------ Jobs


def test_job_pods_are_skipped_visibly_in_container_mode() -> None:
    out, decision = run(pod(owner="Job"), injector(native=False))
    assert not decision.inject
    assert decision.visible
    assert "Job" in decision.reason
    assert names(out["spec"]["containers"]) == ["app"]
    assert "Job" in out["metadata"]["annotations"]["promptcache.io/skipped"]


def test_job_pods_get_a_native_sidecar() -> None:
    # A native sidecar is stopped when the Job's containers finish: the Job completes.
    out, decision = run(pod(owner="Job"))
    assert decision.inject
    assert names(out["spec"]["initContainers"]) == ["promptcache"]


# ------------------------------------------------------------------ the app's own base URLs


def test_env_from_is_the_apps_own_value_and_every_bypass_is_recorded() -> None:
    containers: list[dict[str, Any]] = [
        {"name": "gw", "image": "a", "envFrom": [{"configMapRef": {"name": "gateway"}}]},
        {"name": "own", "image": "a", "env": [{"name": "OPENAI_BASE_URL", "value": "http://x"}]},
        {"name": "plain", "image": "a"},
    ]
    out, decision = run(pod(containers=containers))
    by_name = {c["name"]: c for c in out["spec"]["containers"]}
    assert "env" not in by_name["gw"]  # an explicit env entry would override its envFrom
    assert [e["name"] for e in by_name["own"]["env"]] == ["OPENAI_BASE_URL", "ANTHROPIC_BASE_URL"]
    assert by_name["own"]["env"][0]["value"] == "http://x"
    assert {e["name"] for e in by_name["plain"]["env"]} == {"ANTHROPIC_BASE_URL", "OPENAI_BASE_URL"}
    expected = {
        "gw": {"ANTHROPIC_BASE_URL": "envFrom", "OPENAI_BASE_URL": "envFrom"},
        "own": {"OPENAI_BASE_URL": "env"},
    }
    assert decision.bypass == expected
    assert json.loads(out["metadata"]["annotations"]["promptcache.io/bypass"]) == expected


def test_env_from_override_annotation_sets_the_base_urls() -> None:
    containers = [{"name": "gw", "image": "a", "envFrom": [{"secretRef": {"name": "s"}}]}]
    annotations = {**OPT_IN, "promptcache.io/env-from": "override"}
    out, decision = run(pod(annotations=annotations, containers=containers))
    assert {e["name"] for e in out["spec"]["containers"][0]["env"]} == {
        "ANTHROPIC_BASE_URL",
        "OPENAI_BASE_URL",
    }
    assert decision.bypass == {}
    assert "promptcache.io/bypass" not in out["metadata"]["annotations"]


# ------------------------------------------------------------------ resources, volumes


@pytest.mark.parametrize(
    ("annotation", "value"),
    [
        ("promptcache.io/sidecar-memory", "1Ei"),
        ("promptcache.io/sidecar-memory-limit", "100Gi"),
        ("promptcache.io/sidecar-cpu", "5000"),
        ("promptcache.io/sidecar-cpu-limit", "1e30"),
    ],
)
def test_unbounded_resource_annotations_are_ignored(annotation: str, value: str) -> None:
    out, decision = run(pod(annotations={**OPT_IN, annotation: value}))
    sidecar = out["spec"]["initContainers"][0]
    assert sidecar["resources"] == {
        "requests": {"cpu": "50m", "memory": "64Mi"},
        "limits": {"cpu": "1", "memory": "256Mi"},
    }
    assert len(decision.warnings) == 1
    assert "above the sidecar's maximum" in decision.warnings[0]


def test_a_volume_already_named_like_ours_gets_a_free_name() -> None:
    theirs = {"name": "promptcache-policy", "emptyDir": {}}
    out, _ = run(pod(volumes=[theirs]))
    volumes = out["spec"]["volumes"]
    assert volumes[0] == theirs
    assert volumes[1]["name"] == "promptcache-policy-2"
    assert volumes[1]["configMap"]["name"] == "promptcache-policy-support"
    mount = out["spec"]["initContainers"][0]["volumeMounts"][0]
    assert mount["name"] == "promptcache-policy-2"


# ------------------------------------------------------------------ namespaces


def test_a_request_without_a_namespace_is_never_injected() -> None:
    out, decision = run(pod(), namespace=None)
    assert not decision.inject
    assert "namespace" in decision.reason
    assert "initContainers" not in out["spec"]


def test_a_namespace_labelled_disabled_wins_over_the_pods_annotation() -> None:
    _, decision = run(pod(), labels={"promptcache.io/inject": "disabled"})
    assert not decision.inject


def test_cert_manager_is_excluded_by_default() -> None:
    _, decision = run(pod(), namespace="cert-manager")
    assert not decision.inject
    assert decision.reason == "namespace cert-manager is excluded"


# ------------------------------------------------------------------ mode and diagnostics


def test_mode_and_diagnostics_flags() -> None:
    out, _ = run(pod())
    args = out["spec"]["initContainers"][0]["args"]
    assert "--mode" not in args  # apply is the sidecar's default
    assert "--anthropic-diagnostics" not in args

    inj = injector(mode="observe", anthropicDiagnostics=True)
    out, _ = run(pod(), inj)
    args = out["spec"]["initContainers"][0]["args"]
    assert args[args.index("--mode") + 1] == "observe"
    assert args[-1] == "--anthropic-diagnostics"

    # the pod's annotation overrides the chart's mode
    out, decision = run(pod(annotations={**OPT_IN, "promptcache.io/mode": "apply"}), inj)
    assert decision.mode == "apply"
    assert "--mode" not in out["spec"]["initContainers"][0]["args"]
    out, decision = run(pod(annotations={**OPT_IN, "promptcache.io/mode": "observe"}))
    assert decision.mode == "observe"


def test_an_unknown_mode_annotation_warns_and_keeps_the_configured_mode() -> None:
    _, decision = run(pod(annotations={**OPT_IN, "promptcache.io/mode": "turbo"}))
    assert decision.inject
    assert decision.mode == "apply"
    assert decision.warnings == [
        "promptcache: ignored promptcache.io/mode='turbo': one of observe, apply"
    ]
