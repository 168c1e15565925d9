"""The pod mutation rules of the injection webhook, on plain dicts."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch
import kopf
import pytest
from promptcache_operator.settings import InjectorConfig, parse_injector_config
from promptcache_operator.webhook.injection import (
    CONTAINER_NAME,
    POLICY_PATH,
    STATUS_ANNOTATION,
    Injector,
    already_injected,
    inject,
    native_enabled,
    parse_quantity,
    patch_fn,
)


def make_injector(*, native: bool = True, **config: Any) -> Injector:
    return Injector(
        config=parse_injector_config(config),
        native=native,
        version="9.9.9",
        operator_namespace="promptcache-system",
    )


def make_pod(
    *,
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    containers: list[dict[str, Any]] | None = None,
    init: list[dict[str, Any]] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "app-", "namespace": "apps"},
        "spec": {"containers": containers or [{"name": "app", "image": "example/app:1"}], **spec},
    }
    if annotations is not None:
        pod["metadata"]["annotations"] = annotations
    if labels is not None:
        pod["metadata"]["labels"] = labels
    if init is not None:
        pod["spec"]["initContainers"] = init
    return pod


OPT_IN = {"promptcache.io/inject": "true", "promptcache.io/policy": "support"}


def run(
    pod: dict[str, Any],
    *,
    injector: Injector | None = None,
    namespace: str = "apps",
    ns_labels: dict[str, str] | None = None,
) -> tuple[dict[str, Any], Any]:
    return inject(
        pod,
        namespace=namespace,
        namespace_labels=ns_labels,
        injector=injector or make_injector(),
    )


def sidecar_of(pod: dict[str, Any]) -> dict[str, Any]:
    spec = pod["spec"]
    found = [
        c
        for key in ("initContainers", "containers")
        for c in spec.get(key, [])
        if c["name"] == CONTAINER_NAME
    ]
    assert len(found) == 1, found
    sidecar: dict[str, Any] = found[0]
    return sidecar


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", [])}


# ------------------------------------------------------------------ who gets injected


@pytest.mark.parametrize(
    ("annotations", "ns_labels", "expected"),
    [
        (OPT_IN, None, True),
        ({"promptcache.io/inject": "TRUE"}, None, True),
        ({}, None, False),
        ({"promptcache.io/inject": "yes-please"}, None, False),
        ({}, {"promptcache.io/inject": "enabled"}, True),
        ({}, {"promptcache.io/inject": "disabled"}, False),
        ({"promptcache.io/inject": "false"}, {"promptcache.io/inject": "enabled"}, False),
        ({"promptcache.io/inject": "false"}, None, False),
    ],
)
def test_opt_in_by_pod_annotation_or_namespace_label(
    annotations: dict[str, str], ns_labels: dict[str, str] | None, expected: bool
) -> None:
    _, decision = run(make_pod(annotations=annotations), ns_labels=ns_labels)
    assert decision.inject is expected, decision.reason


@pytest.mark.parametrize("namespace", ["kube-system", "kube-public", "promptcache-system"])
def test_excluded_namespaces_are_never_injected(namespace: str) -> None:
    pod = make_pod(annotations=OPT_IN)
    out, decision = run(pod, namespace=namespace, ns_labels={"promptcache.io/inject": "enabled"})
    assert not decision.inject
    assert "excluded" in decision.reason
    assert out == pod


def test_configured_exclusions_add_to_the_operator_namespace() -> None:
    injector = make_injector(excludeNamespaces=["batch"])
    assert injector.excluded == {"batch", "promptcache-system"}
    _, decision = run(make_pod(annotations=OPT_IN), injector=injector, namespace="batch")
    assert not decision.inject
    _, decision = run(make_pod(annotations=OPT_IN), injector=injector, namespace="kube-system")
    assert decision.inject  # the config replaced the default list


def test_mirror_and_host_network_pods_are_skipped() -> None:
    mirror = make_pod(annotations={**OPT_IN, "kubernetes.io/config.mirror": "abc"})
    assert run(mirror)[1].reason == "mirror pod"
    host = make_pod(annotations=OPT_IN, hostNetwork=True)
    assert run(host)[1].reason == "hostNetwork pod"


@pytest.mark.parametrize(
    "pod",
    [
        make_pod(annotations=OPT_IN, init=[{"name": "promptcache", "image": "x"}]),
        make_pod(
            annotations=OPT_IN,
            containers=[{"name": "app", "image": "a"}, {"name": "promptcache", "image": "x"}],
        ),
        make_pod(annotations={**OPT_IN, STATUS_ANNOTATION: "{}"}),
    ],
    ids=["init-container", "container", "status-annotation"],
)
def test_already_injected_pods_are_left_alone(pod: dict[str, Any]) -> None:
    assert already_injected(pod)
    out, decision = run(pod)
    assert decision.reason == "already injected"
    assert out == pod


# ------------------------------------------------------------------ what gets injected


def test_native_sidecar_goes_first_in_init_containers() -> None:
    pod = make_pod(annotations=OPT_IN, init=[{"name": "migrate", "image": "m"}])
    out, decision = run(pod)
    assert decision.inject
    init = out["spec"]["initContainers"]
    assert [c["name"] for c in init] == ["promptcache", "migrate"]
    sidecar = init[0]
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["startupProbe"]["httpGet"] == {"path": "/healthz", "port": 9787}
    assert [c["name"] for c in out["spec"]["containers"]] == ["app"]


def test_container_sidecar_goes_first_and_holds_the_app_on_old_clusters() -> None:
    out, _ = run(make_pod(annotations=OPT_IN), injector=make_injector(native=False))
    assert [c["name"] for c in out["spec"]["containers"]] == ["promptcache", "app"]
    assert "initContainers" not in out["spec"]
    sidecar = sidecar_of(out)
    assert "restartPolicy" not in sidecar
    assert "startupProbe" not in sidecar
    # The kubelet starts the app only when the sidecar's postStart hook has returned.
    command = sidecar["lifecycle"]["postStart"]["exec"]["command"]
    assert command[:2] == ["python3", "-c"]
    assert command[3:] == ["http://127.0.0.1:9787/readyz", "60"]
    compile(command[2], "<postStart>", "exec")
    status = json.loads(out["metadata"]["annotations"][STATUS_ANNOTATION])
    assert status == {"version": "9.9.9", "policy": "support", "sidecar": "container"}


def test_sidecar_container_follows_the_contract() -> None:
    out, _ = run(make_pod(annotations=OPT_IN))
    sidecar = sidecar_of(out)
    assert sidecar["image"] == InjectorConfig().image
    assert sidecar["imagePullPolicy"] == "IfNotPresent"
    assert sidecar["args"] == [
        "sidecar",
        "--listen",
        "127.0.0.1:8787",
        "--admin-listen",
        "0.0.0.0:9787",
        "--policy",
        POLICY_PATH,
        "--anthropic-upstream",
        "https://api.anthropic.com",
        "--openai-upstream",
        "https://api.openai.com",
    ]
    assert sidecar["ports"] == [{"name": "admin", "containerPort": 9787, "protocol": "TCP"}]
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 9787}
    assert sidecar["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 9787}
    assert sidecar["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert sidecar["resources"] == {
        "requests": {"cpu": "50m", "memory": "64Mi"},
        "limits": {"cpu": "1", "memory": "256Mi"},
    }
    assert sidecar["volumeMounts"] == [
        {"name": "promptcache-policy", "mountPath": "/etc/promptcache/policy", "readOnly": True}
    ]
    assert "env" not in sidecar  # no OTLP endpoint configured
    assert out["spec"]["volumes"] == [
        {
            "name": "promptcache-policy",
            "configMap": {"name": "promptcache-policy-support", "optional": True},
        }
    ]
    annotations = out["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "9787"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert json.loads(annotations[STATUS_ANNOTATION]) == {
        "version": "9.9.9",
        "policy": "support",
        "sidecar": "native",
    }


def test_config_drives_ports_image_and_upstreams() -> None:
    injector = make_injector(
        image="registry.local/pc:dev",
        imagePullPolicy="Always",
        listenPort=18000,
        adminPort=19000,
        upstreams={"anthropic": "http://sim:8080", "openai": "http://vllm:8000"},
    )
    out, _ = run(make_pod(annotations=OPT_IN), injector=injector)
    sidecar = sidecar_of(out)
    assert sidecar["image"] == "registry.local/pc:dev"
    assert sidecar["imagePullPolicy"] == "Always"
    assert sidecar["args"][1:5] == [
        "--listen",
        "127.0.0.1:18000",
        "--admin-listen",
        "0.0.0.0:19000",
    ]
    assert sidecar["args"][-4:] == [
        "--anthropic-upstream",
        "http://sim:8080",
        "--openai-upstream",
        "http://vllm:8000",
    ]
    assert out["metadata"]["annotations"]["prometheus.io/port"] == "19000"
    assert env_of(out["spec"]["containers"][0])["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:18000"


def test_without_a_policy_the_sidecar_runs_policyless_and_mounts_nothing() -> None:
    out, decision = run(make_pod(annotations={"promptcache.io/inject": "true"}))
    assert decision.inject
    assert decision.policy is None
    sidecar = sidecar_of(out)
    assert "--policy" not in sidecar["args"]
    assert "volumeMounts" not in sidecar
    assert "volumes" not in out["spec"]
    assert json.loads(out["metadata"]["annotations"][STATUS_ANNOTATION])["policy"] == ""


@pytest.mark.parametrize("bad", ["Support", "a" * 64, "has space", "-lead"])
def test_a_bad_policy_name_warns_and_runs_policyless(bad: str) -> None:
    out, decision = run(
        make_pod(annotations={"promptcache.io/inject": "true", "promptcache.io/policy": bad})
    )
    assert decision.inject
    assert decision.policy is None
    assert any("not a valid policy name" in w for w in decision.warnings)
    assert "volumes" not in out["spec"]


def test_app_containers_get_base_urls_unless_they_set_them() -> None:
    pod = make_pod(
        annotations=OPT_IN,
        containers=[
            {"name": "app", "image": "a"},
            {
                "name": "own",
                "image": "b",
                "env": [{"name": "OPENAI_BASE_URL", "value": "https://gateway/v1"}],
            },
        ],
        init=[{"name": "warmup", "image": "w"}],
    )
    out, _ = run(pod)
    app, own = out["spec"]["containers"]
    assert env_of(app) == {
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:8787",
        "OPENAI_BASE_URL": "http://127.0.0.1:8787/v1",
    }
    assert env_of(own) == {
        "OPENAI_BASE_URL": "https://gateway/v1",
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:8787",
    }
    warmup = out["spec"]["initContainers"][1]
    assert "env" not in warmup  # only app containers, as the contract says
    assert "env" not in sidecar_of(out)


def test_otel_env_comes_from_config_with_the_pods_service_name() -> None:
    injector = make_injector(
        otel={
            "endpoint": "http://otel-collector.observability:4318",
            "extraEnv": {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio"},
        }
    )
    pod = make_pod(
        annotations=OPT_IN, labels={"app.kubernetes.io/name": "support-agent", "app": "x"}
    )
    out, _ = run(pod, injector=injector)
    assert env_of(sidecar_of(out)) == {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector.observability:4318",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_SERVICE_NAME": "support-agent",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
    }
    out, _ = run(make_pod(annotations=OPT_IN, labels={"app": "legacy"}), injector=injector)
    assert env_of(sidecar_of(out))["OTEL_SERVICE_NAME"] == "legacy"
    out, _ = run(make_pod(annotations=OPT_IN), injector=injector)
    assert env_of(sidecar_of(out))["OTEL_SERVICE_NAME"] == "promptcache-sidecar"


def test_scrape_annotations_are_not_overridden() -> None:
    pod = make_pod(
        annotations={**OPT_IN, "prometheus.io/scrape": "true", "prometheus.io/port": "8080"}
    )
    out, _ = run(pod)
    annotations = out["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "8080"
    assert "prometheus.io/path" not in annotations  # the app's scrape config stays whole


def test_resources_are_overridable_per_pod() -> None:
    pod = make_pod(
        annotations={
            **OPT_IN,
            "promptcache.io/sidecar-cpu": "200m",
            "promptcache.io/sidecar-memory": "128Mi",
            "promptcache.io/sidecar-cpu-limit": "2",
            "promptcache.io/sidecar-memory-limit": "nonsense",
        }
    )
    out, decision = run(pod)
    assert sidecar_of(out)["resources"] == {
        "requests": {"cpu": "200m", "memory": "128Mi"},
        "limits": {"cpu": "2", "memory": "256Mi"},
    }
    assert decision.warnings == [
        "promptcache: ignored promptcache.io/sidecar-memory-limit='nonsense': "
        "not a quantity: 'nonsense'"
    ]


def test_a_request_above_its_limit_raises_the_limit() -> None:
    pod = make_pod(annotations={**OPT_IN, "promptcache.io/sidecar-memory": "1Gi"})
    out, decision = run(pod)
    assert sidecar_of(out)["resources"]["limits"]["memory"] == "1Gi"
    assert any("limit 256Mi raised" in w for w in decision.warnings)


def test_config_without_limits_injects_requests_only() -> None:
    injector = make_injector(resources={"requests": {"cpu": "10m"}, "limits": {}})
    out, _ = run(make_pod(annotations=OPT_IN), injector=injector)
    assert sidecar_of(out)["resources"] == {"requests": {"cpu": "10m"}}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("250m", 0.25),
        ("1", 1.0),
        ("1.5", 1.5),
        ("1Ki", 1024.0),
        ("64Mi", 64 * 2**20),
        ("1e3", 1000.0),
    ],
)
def test_parse_quantity(text: str, value: float) -> None:
    assert parse_quantity(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "-1", "1.2.3", "12Qi", "m"])
def test_parse_quantity_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a quantity"):
        parse_quantity(text)


@pytest.mark.parametrize(
    ("mode", "minor", "kubelets", "expected"),
    [
        ("auto", 28, [], False),
        ("auto", 29, [], True),  # no nodes yet: the API server decides
        ("auto", 34, [34, 33, 29], True),
        ("auto", 34, [34, 28], False),  # one old kubelet: a native sidecar would hang there
        ("auto", 34, None, False),  # nodes unreadable: the mode every kubelet runs
        ("auto", None, [], False),
        ("always", 20, [20], True),
        ("never", 34, [34], False),
    ],
)
def test_native_sidecar_decision(
    mode: str, minor: int | None, kubelets: list[int] | None, expected: bool
) -> None:
    assert native_enabled(mode, minor, kubelets) is expected


# ------------------------------------------------------------------ idempotency


@pytest.mark.parametrize("native", [True, False])
def test_injecting_twice_changes_nothing(native: bool) -> None:
    injector = make_injector(native=native)
    once, _ = run(make_pod(annotations=OPT_IN), injector=injector)
    twice, decision = run(once, injector=injector)
    assert not decision.inject
    assert twice == once


def test_inject_does_not_mutate_its_input() -> None:
    pod = make_pod(annotations=OPT_IN)
    before = copy.deepcopy(pod)
    run(pod)
    assert pod == before


def test_kopf_patch_fn_gives_a_json_patch_that_reproduces_the_injection() -> None:
    # The webhook hands kopf the injected pod as a patch fn; kopf diffs the result into
    # the JSONPatch the API server applies. Applying that patch must give the same pod,
    # and running the fn again on the result must add nothing.
    injector = make_injector()
    pod = make_pod(annotations=OPT_IN, init=[{"name": "migrate", "image": "m"}])
    expected, _ = run(pod, injector=injector)
    patch = kopf.Patch(body=kopf.Body(pod))  # type: ignore[arg-type]
    patch.fns.append(patch_fn(expected))
    ops = patch.as_json_patch()
    assert ops
    patched = jsonpatch.apply_patch(pod, ops)
    assert patched == expected
    # kopf may call a fn more than once: the second call must change nothing.
    assert patch.as_json_patch(body=patched) == []
