"""The Helm chart renders what the contract says, and the real API server accepts it.

Two value sets throughout: the defaults and ``ci/all-on-values.yaml`` (every toggle on).
``helm lint --strict`` and ``helm template`` run the pinned helm from the kubebin cache;
the rendered manifests then go to the cluster tier's kube-apiserver as a server-side
dry-run, with the real CRDs of prometheus-operator and cert-manager installed (see
``chart_support``), so every rendered object is validated against its true schema.
"""

from __future__ import annotations

import base64
import datetime
import json
import uuid
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from promptcache_operator.settings import parse_injector_config

from tests.cluster.chart_support import (
    ALL_ON,
    CHART,
    NAMESPACE,
    RELEASE,
    VALUE_SETS,
    Manifest,
    dry_run,
    helm,
    only,
    render,
)
from tests.cluster.controlplane import ControlPlane


@pytest.fixture(scope="module", params=list(VALUE_SETS))
def value_set(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def docs(kubebin_dir: Path, value_set: str) -> list[Manifest]:
    return render(kubebin_dir, *VALUE_SETS[value_set])


def test_lint_strict(kubebin_dir: Path, value_set: str) -> None:
    proc = helm(kubebin_dir, "lint", "--strict", str(CHART), *VALUE_SETS[value_set])
    assert "0 chart(s) failed" in proc.stdout


def test_renders_each_component(docs: list[Manifest], value_set: str) -> None:
    kinds = sorted(d["kind"] for d in docs)
    common = [
        "ClusterKopfPeering",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Deployment",
        "MutatingWebhookConfiguration",
        "PodDisruptionBudget",
        "Service",
        "ServiceAccount",
    ]
    if value_set == "defaults":
        assert kinds == sorted([*common, "Secret"])
    else:  # cert-manager replaces the Secret (a CA chain: 2 Issuers, 2 Certificates);
        # monitoring adds three objects, and the NetworkPolicy one
        extra = ["Certificate", "Certificate", "ConfigMap", "Issuer", "Issuer"]
        extra += ["NetworkPolicy", "PodMonitor", "PrometheusRule"]
        assert kinds == sorted(common + extra)
    for doc in docs:
        meta = doc["metadata"]
        assert len(meta["name"]) <= 63, meta["name"]
        labels = meta["labels"]
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/part-of"] == "promptcache"


def test_long_names_are_truncated(kubebin_dir: Path) -> None:
    docs = render(kubebin_dir, "--set", "fullnameOverride=" + "x" * 80)
    names = [d["metadata"]["name"] for d in docs]
    assert all(len(n) <= 63 and not n.endswith("-") for n in names), names
    # component suffixes survive the truncation, so names stay distinct
    for suffix in ("-webhook", "-webhook-tls", "-injector"):
        assert [n for n in names if n.endswith(suffix)], suffix


def test_image_digest_pins_operator_and_sidecar(kubebin_dir: Path) -> None:
    digest = "sha256:" + "ab" * 32
    docs = render(kubebin_dir, "--set", f"image.digest={digest}")
    container = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"ghcr.io/promptcache/promptcache@{digest}"
    config = yaml.safe_load(only(docs, "ConfigMap", "-injector")["data"]["config.yaml"])
    assert config["image"] == f"ghcr.io/promptcache/promptcache@{digest}"


def test_operator_pod_is_locked_down(docs: list[Manifest], value_set: str) -> None:
    deployment = only(docs, "Deployment")
    pod = deployment["spec"]["template"]
    spec = pod["spec"]
    assert deployment["spec"]["replicas"] == (2 if value_set == "defaults" else 3)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = spec["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    # the operator contract: args, env, mounts, ports
    args = container["args"]
    assert args[:9] == [
        "operator",
        "--injector-config",
        "/etc/promptcache/injector/config.yaml",
        "--webhook-port",
        "9443",
        "--webhook-cert-dir",
        "/etc/promptcache/webhook-certs",
        "--namespace",
        "$(POD_NAMESPACE)",
    ]
    assert args[9:11] == ["--peering", only(docs, "ClusterKopfPeering")["metadata"]["name"]]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    injector_cm = volumes[mounts["/etc/promptcache/injector"]]["configMap"]["name"]
    assert injector_cm == only(docs, "ConfigMap", "-injector")["metadata"]["name"]
    certs = volumes[mounts["/etc/promptcache/webhook-certs"]]["secret"]["secretName"]
    assert certs.endswith("-webhook-tls")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"webhook": 9443, "health": 8080, "metrics": 8081}
    assert args[args.index("--admission-budget") + 1] == str(
        only(docs, "MutatingWebhookConfiguration")["webhooks"][0]["timeoutSeconds"] - 1
    )
    # the webhook never injects into the operator itself
    assert pod["metadata"]["labels"]["promptcache.io/control-plane"] == "operator"


def test_webhook_configuration(docs: list[Manifest], value_set: str) -> None:
    mwc = only(docs, "MutatingWebhookConfiguration")
    (hook,) = mwc["webhooks"]
    assert hook["failurePolicy"] == "Ignore"
    assert hook["sideEffects"] == "None"
    assert hook["admissionReviewVersions"] == ["v1"]
    assert 1 <= hook["timeoutSeconds"] <= 10
    assert hook["reinvocationPolicy"] == "Never"
    (rule,) = hook["rules"]
    assert (rule["operations"], rule["resources"], rule["apiGroups"]) == (
        ["CREATE"],
        ["pods"],
        [""],
    )
    excluded = hook["namespaceSelector"]["matchExpressions"][0]
    assert excluded["key"] == "kubernetes.io/metadata.name"
    assert excluded["operator"] == "NotIn"
    assert {"kube-system", "kube-public", NAMESPACE} <= set(excluded["values"])
    assert {"key": "promptcache.io/control-plane", "operator": "DoesNotExist"} in hook[
        "objectSelector"
    ]["matchExpressions"]
    assert "cert-manager" in excluded["values"]  # issuing our certificate never waits on us
    opt_out = {"key": "promptcache.io/inject", "operator": "NotIn", "values": ["disabled"]}
    assert opt_out in hook["namespaceSelector"]["matchExpressions"]
    svc_ref = hook["clientConfig"]["service"]
    assert (svc_ref["path"], svc_ref["port"], svc_ref["namespace"]) == ("/inject", 443, NAMESPACE)
    service = only(docs, "Service")
    assert service["metadata"]["name"] == svc_ref["name"]
    (port,) = service["spec"]["ports"]
    assert (port["port"], port["targetPort"]) == (443, "webhook")
    pod_labels = only(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    if value_set == "all-on":  # user selectors are ANDed with the built-in ones
        assert "monitoring" in excluded["values"]
        assert hook["namespaceSelector"]["matchLabels"] == {"example.com/llm-apps": "true"}
        assert len(hook["objectSelector"]["matchExpressions"]) == 2


def test_generated_certificate_chains_to_ca_bundle(kubebin_dir: Path) -> None:
    docs = render(kubebin_dir)
    secret = only(docs, "Secret")
    ca_bundle = only(docs, "MutatingWebhookConfiguration")["webhooks"][0]["clientConfig"]
    assert secret["type"] == "kubernetes.io/tls"
    assert ca_bundle["caBundle"] == secret["data"]["ca.crt"]
    ca = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["ca.crt"]))
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    cert.verify_directly_issued_by(ca)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    service = only(docs, "Service")["metadata"]["name"]
    assert f"{service}.{NAMESPACE}.svc" in sans.get_values_for_type(x509.DNSName)
    lifetime = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    assert lifetime > datetime.timedelta(days=3600)


def test_cert_manager_mode(kubebin_dir: Path) -> None:
    docs = render(kubebin_dir, "-f", str(ALL_ON))
    assert not [d for d in docs if d["kind"] == "Secret"]
    certificate = only(docs, "Certificate", "-webhook")
    mwc = only(docs, "MutatingWebhookConfiguration")
    assert mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
        f"{NAMESPACE}/{certificate['metadata']['name']}"
    )
    assert "caBundle" not in mwc["webhooks"][0]["clientConfig"]
    volumes = only(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
    secret_names = {v["secret"]["secretName"] for v in volumes if "secret" in v}
    assert secret_names == {certificate["spec"]["secretName"]}
    # the chart's own CA: self-signed Issuer -> CA Certificate -> CA Issuer -> serving cert
    issuers = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "Issuer"}
    ca_issuer = issuers[certificate["spec"]["issuerRef"]["name"]]
    (ca_cert,) = [
        d
        for d in docs
        if d["kind"] == "Certificate" and d["spec"]["secretName"] == ca_issuer["ca"]["secretName"]
    ]
    assert ca_cert["spec"]["isCA"] is True
    assert ca_cert["spec"]["privateKey"]["rotationPolicy"] == "Never"
    assert issuers[ca_cert["spec"]["issuerRef"]["name"]] == {"selfSigned": {}}
    # a given issuer replaces the chart's self-signed one
    docs = render(
        kubebin_dir,
        "-f",
        str(ALL_ON),
        "--set",
        "certificates.certManager.issuerRef.name=corp-ca",
        "--set",
        "certificates.certManager.issuerRef.kind=ClusterIssuer",
    )
    assert not [d for d in docs if d["kind"] == "Issuer"]
    ref = only(docs, "Certificate")["spec"]["issuerRef"]
    assert (ref["name"], ref["kind"]) == ("corp-ca", "ClusterIssuer")


def test_injector_config_is_accepted_by_the_operator(docs: list[Manifest], value_set: str) -> None:
    text = only(docs, "ConfigMap", "-injector")["data"]["config.yaml"]
    config = parse_injector_config(yaml.safe_load(text))
    if value_set == "defaults":
        assert config.image == "ghcr.io/promptcache/promptcache:0.1.0"
        assert (config.listen_port, config.admin_port, config.native_sidecar) == (
            8787,
            9787,
            "auto",
        )
        assert config.otel.endpoint == ""
    else:
        assert config.image == "registry.example.com/promptcache/sidecar:0.1.0-ci"
        assert config.native_sidecar == "always"
        assert (config.mode, config.anthropic_diagnostics) == ("observe", True)
        assert config.otel.extra_env["OTEL_TRACES_SAMPLER_ARG"] == "0.1"
        assert "monitoring" in config.exclude_namespaces


def test_monitoring_objects(kubebin_dir: Path) -> None:
    docs = render(kubebin_dir, "-f", str(ALL_ON))
    podmonitor = only(docs, "PodMonitor")
    endpoint, operator_endpoint = podmonitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "admin"
    assert operator_endpoint["port"] == "metrics"
    assert operator_endpoint["relabelings"][0]["regex"] == f"operator;{RELEASE};operator"
    assert {
        "sourceLabels": ["__meta_kubernetes_pod_container_name"],
        "regex": "promptcache",
        "action": "keep",
    } in endpoint["relabelings"]
    assert podmonitor["spec"]["namespaceSelector"] == {"any": True}
    rules = only(docs, "PrometheusRule")["spec"]["groups"][0]["rules"]
    assert {r["alert"] for r in rules} == {
        "PromptcacheHitRateCollapse",
        "PromptcachePrefixChurn",
        "PromptcacheUpstreamErrors",
        "PromptcacheTransformErrors",
        "PromptcacheWebhookFailingOpen",
    }
    dashboard = only(docs, "ConfigMap", "-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["promptcache.json"])["uid"] == "promptcache-overview"
    # each alert can be switched off on its own
    docs = render(
        kubebin_dir,
        "-f",
        str(ALL_ON),
        "--set",
        "monitoring.prometheusRule.prefixChurn.enabled=false",
    )
    rules = only(docs, "PrometheusRule")["spec"]["groups"][0]["rules"]
    assert "PromptcachePrefixChurn" not in {r["alert"] for r in rules}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["operator.peering.enabled=false"], "needs operator.peering.enabled=true"),
        (["operator.podDisruptionBudget.minAvailable=2"], "must be below operator.replicaCount"),
        (["injector.adminPort=8787"], "injector.listenPort and injector.adminPort must differ"),
        (["operator.healthPort=9443"], "operator.healthPort and webhook.port must differ"),
        (["operator.serviceAccount.create=false"], "operator.serviceAccount.name is required"),
        # the schema, before any template runs
        (["webhook.timeoutSeconds=11"], "maximum"),
        (["webhook.failurePolicy=Sometimes"], "failurePolicy"),
        (["injector.nativeSidecar=maybe"], "nativeSidecar"),
        (["operator.replicas=3"], "additional properties 'replicas' not allowed"),
        (["injector.otel.extraEnv.PATH=/bin"], "invalid propertyName 'PATH'"),
        # quantities the operator would refuse at start (the schema is its model's)
        (["injector.resources.requests.memory=-1"], "want null or string"),
        (["injector.resources.requests.cpu=1.2.3"], "does not match pattern"),
        (["injector.resources.limits.memory=5mm"], "does not match pattern"),
        (["injector.listenPort=80"], "minimum"),
        (["injector.mode=maybe"], "mode"),
        (["operator.metricsPort=8080"], "operator.metricsPort must differ"),
    ],
)
def test_impossible_values_fail(kubebin_dir: Path, overrides: list[str], message: str) -> None:
    args = [arg for o in overrides for arg in ("--set", o)]
    proc = helm(kubebin_dir, "template", RELEASE, str(CHART), *args, check=False)
    assert proc.returncode != 0, f"{overrides} rendered"
    assert message in proc.stderr


def test_deployment_patching_exists_only_when_switched_on(kubebin_dir: Path) -> None:
    def deployment_rules(docs: list[Manifest]) -> list[dict[str, object]]:
        rules: list[dict[str, object]] = only(docs, "ClusterRole")["rules"]
        return [r for r in rules if "deployments" in r["resources"]]  # type: ignore[operator]

    assert deployment_rules(render(kubebin_dir)) == [
        {
            "apiGroups": ["apps"],
            "resources": ["deployments"],
            "verbs": ["get", "list", "watch", "patch"],
        }
    ]
    docs = render(kubebin_dir, "--set", "deploymentAnnotations.enabled=false")
    assert deployment_rules(docs) == []
    args = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--no-deployment-annotations" in args


def test_cluster_role_is_least_privilege(docs: list[Manifest]) -> None:
    rules = only(docs, "ClusterRole")["rules"]
    verbs = {
        (group, resource): set(rule["verbs"])
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert verbs[("", "configmaps")] == {"get", "list", "watch", "create", "update"}
    assert verbs[("", "nodes")] == {"get", "list"}
    assert verbs[("promptcache.io", "promptpolicies")] == {"get", "list", "watch", "patch"}
    assert not any("*" in v or "delete" in v or "escalate" in v for v in verbs.values())
    assert ("", "secrets") not in verbs
    assert ("", "pods") not in verbs


def test_pdb_lets_unhealthy_pods_be_evicted(docs: list[Manifest]) -> None:
    pdb = only(docs, "PodDisruptionBudget")
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_network_policy_opens_only_the_webhook_and_metrics_ports(kubebin_dir: Path) -> None:
    docs = render(kubebin_dir, "-f", str(ALL_ON))
    policy = only(docs, "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    ports = [[p["port"] for p in rule["ports"]] for rule in policy["spec"]["ingress"]]
    assert ports == [["webhook"], ["metrics"]]
    pod_labels = only(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert not [d for d in render(kubebin_dir) if d["kind"] == "NetworkPolicy"]


def test_sidecar_digest_pins_an_overridden_repository(kubebin_dir: Path) -> None:
    digest = "sha256:" + "cd" * 32
    docs = render(
        kubebin_dir,
        "--set",
        "injector.image.repository=registry.example.com/pc",
        "--set",
        f"injector.image.digest={digest}",
    )
    config = yaml.safe_load(only(docs, "ConfigMap", "-injector")["data"]["config.yaml"])
    assert config["image"] == f"registry.example.com/pc@{digest}"


def test_single_standalone_operator_renders(kubebin_dir: Path) -> None:
    docs = render(
        kubebin_dir,
        "--set",
        "operator.replicaCount=1",
        "--set",
        "operator.peering.enabled=false",
        "--set",
        "operator.podDisruptionBudget.enabled=false",
    )
    args = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--standalone" in args
    assert "--peering" not in args
    assert not [d for d in docs if d["kind"] in ("ClusterKopfPeering", "PodDisruptionBudget")]
    rules = only(docs, "ClusterRole")["rules"]
    assert not [r for r in rules if "kopf.dev" in r["apiGroups"]]


# ------------------------------------------------------------------ real API server


def test_server_side_dry_run(
    cluster_with_crds: ControlPlane, kubebin_dir: Path, value_set: str
) -> None:
    cp = cluster_with_crds
    namespace = f"pc-dry-{uuid.uuid4().hex[:8]}"
    # all-on puts monitoring objects into "monitoring"; dry-run needs the namespaces to exist
    for ns in (namespace, "monitoring"):
        cp.kubectl("create", "namespace", ns, check=False)
    try:
        docs = render(kubebin_dir, *VALUE_SETS[value_set], namespace=namespace)
        items = dry_run(cp, "-f", "-", input="\n---\n".join(yaml.safe_dump(d) for d in docs))
        assert sorted(i["kind"] for i in items) == sorted(d["kind"] for d in docs)
        # the API server applied its defaults: the objects really went through admission
        deployment = next(i for i in items if i["kind"] == "Deployment")
        assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    finally:
        cp.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
