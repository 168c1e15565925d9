"""e2e on kind: the chart on a cluster with a kubelet, so pods really run.

``make e2e-kind`` (``pytest tests/cluster --kind``) on a machine with a Docker engine;
``tests/conftest.py`` skips everything with the reason where ``docker info`` fails, and
skips these tests without ``--kind``. What the loopback control plane cannot show, this
does: the image builds and starts, both operator pods become ready, an annotated
Deployment's pod runs with the injected sidecar, the app reaches the provider (the
simulator, in-cluster) through it with the policy applied -- the second call reads the
static prefix from cache -- and the sidecar's ``/metrics`` on the ``admin`` port, the
port a Prometheus PodMonitor scrapes, counts it.

kind comes from ``PATH`` or is built once with ``go install sigs.k8s.io/kind`` (pinned)
into the per-machine cache; its default node image belongs to that kind release.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.cluster.chart_support import CHART
from tests.cluster.controlplane import REPO_ROOT

pytestmark = pytest.mark.e2e_kind

KIND_VERSION = "v0.30.0"
IMAGE = "promptcache:e2e"
APP_NS = "e2e-app"
SIMULATOR_URL = f"http://simulator.{APP_NS}.svc.cluster.local:8790"
POLICY = "e2e-policy"
WAIT = 300.0
# ~2,600 tokens of unchanging text: above the model's minimum cacheable prefix (1,024).
HANDBOOK = " ".join(
    f"Rule {word}: answer briefly, cite the handbook section, and offer a human agent."
    for word in ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel") * 16
)
# Runs inside the app container: two identical Anthropic calls via the injected base URL.
CLIENT = """
import json, os, urllib.request
url = os.environ["ANTHROPIC_BASE_URL"].rstrip("/") + "/v1/messages"
body = json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 16,
                   "messages": [{"role": "user", "content": "Where is my order?"}]}).encode()
usages = []
for _ in range(2):
    req = urllib.request.Request(url, data=body, method="POST", headers={
        "content-type": "application/json", "x-api-key": "e2e", "anthropic-version": "2023-06-01"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        usages.append(json.load(resp)["usage"])
print(json.dumps(usages))
"""


def _run(*cmd: str, timeout: float = WAIT, input: str | None = None) -> str:
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, input=input, check=False
    )
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd[:4])} ... exited {proc.returncode}:\n{proc.stderr}")
    return proc.stdout


def _kind_binary() -> str:
    found = shutil.which("kind")
    if found:
        return found
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    bin_dir = cache / "promptcache" / "kind" / KIND_VERSION
    kind = bin_dir / "kind"
    if not kind.exists():
        bin_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "GOBIN": str(bin_dir)}
        proc = subprocess.run(
            ["go", "install", f"sigs.k8s.io/kind@{KIND_VERSION}"],
            capture_output=True, text=True, timeout=1200, env=env, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            pytest.fail(f"go install sigs.k8s.io/kind@{KIND_VERSION}:\n{proc.stderr}")
    return str(kind)


@dataclass(frozen=True)
class KindCluster:
    """A kind cluster and the clients pointed at it."""

    name: str
    kind: str
    kubeconfig: Path
    helm_path: Path

    def kubectl(self, *args: str, input: str | None = None) -> str:
        return _run("kubectl", "--kubeconfig", str(self.kubeconfig), *args, input=input)

    def helm(self, *args: str) -> str:
        return _run(str(self.helm_path), "--kubeconfig", str(self.kubeconfig), *args)

    def get(self, *args: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.kubectl("get", *args, "-o", "json"))
        return data

    def apply(self, *docs: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", input="\n---\n".join(yaml.safe_dump(d) for d in docs))


@pytest.fixture(scope="session")
def kind_cluster(
    kubebin_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KindCluster]:
    kind = _kind_binary()
    name = f"promptcache-e2e-{uuid.uuid4().hex[:6]}"
    kubeconfig = tmp_path_factory.mktemp("kind") / "kubeconfig"
    _run(kind, "create", "cluster", "--name", name, "--kubeconfig", str(kubeconfig),
         "--wait", "180s", timeout=600)  # fmt: skip
    try:
        env = {**os.environ, "DOCKER_BUILDKIT": "1"}
        proc = subprocess.run(
            ["docker", "build", "-t", IMAGE, str(REPO_ROOT)],
            capture_output=True, text=True, timeout=1800, env=env, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            pytest.fail(f"docker build:\n{proc.stderr[-4000:]}")
        _run(kind, "load", "docker-image", IMAGE, "--name", name, timeout=600)
        yield KindCluster(name, kind, kubeconfig, kubebin_dir / "helm")
    finally:
        subprocess.run(
            [kind, "delete", "cluster", "--name", name, "--kubeconfig", str(kubeconfig)],
            capture_output=True, timeout=300, check=False,
        )  # fmt: skip


@pytest.fixture(scope="session")
def installed(kind_cluster: KindCluster) -> KindCluster:
    """The chart installed with the freshly built image, upstreams at the simulator."""
    repo, tag = IMAGE.split(":")
    kind_cluster.helm(
        "install", "promptcache", str(CHART), "-n", "promptcache-system", "--create-namespace",
        "--set", f"image.repository={repo}", "--set", f"image.tag={tag}",
        "--set", "image.pullPolicy=Never", "--set", "injector.imagePullPolicy=Never",
        "--set", f"injector.upstreams.anthropic={SIMULATOR_URL}",
        "--set", f"injector.upstreams.openai={SIMULATOR_URL}",
        "--wait", "--timeout", "300s",
    )  # fmt: skip
    return kind_cluster


def _poll(what: str, check: Any, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(2)
    pytest.fail(f"{what} not within {timeout:.0f}s")


def test_operator_pods_become_ready(installed: KindCluster) -> None:
    deployment = installed.get("deployment", "-n", "promptcache-system", "promptcache")
    assert deployment["status"].get("readyReplicas") == 2


def _app_manifests() -> list[dict[str, Any]]:
    def deployment(name: str, spec: dict[str, Any], annotations: dict[str, str]) -> dict[str, Any]:
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": APP_NS},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}, "annotations": annotations},
                    "spec": spec,
                },
            },
        }

    simulator = {
        "containers": [{
            "name": "simulator", "image": IMAGE, "imagePullPolicy": "Never",
            "args": ["simulate", "--listen", "0.0.0.0:8790", "--time-scale", "0"],
            "ports": [{"name": "http", "containerPort": 8790}],
            "readinessProbe": {"tcpSocket": {"port": 8790}, "periodSeconds": 2},
        }]
    }  # fmt: skip
    app = {
        "containers": [{
            "name": "app", "image": IMAGE, "imagePullPolicy": "Never",
            "command": ["python", "-c", "import signal; signal.pause()"],
        }]
    }  # fmt: skip
    return [
        deployment("simulator", simulator, {}),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "simulator", "namespace": APP_NS},
            "spec": {"selector": {"app": "simulator"}, "ports": [{"port": 8790}]},
        },
        deployment("app", app, {"promptcache.io/inject": "true", "promptcache.io/policy": POLICY}),
    ]


def _policy_manifests() -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "e2e-prompt", "namespace": APP_NS},
            "data": {"handbook.md": HANDBOOK},
        },
        {
            "apiVersion": "promptcache.io/v1alpha1",
            "kind": "PromptPolicy",
            "metadata": {"name": POLICY, "namespace": APP_NS},
            "spec": {
                "provider": "anthropic",
                "staticBlocks": [{
                    "name": "handbook", "mode": "inject", "ttl": "5m",
                    "contentFrom": {"configMapKeyRef": {"name": "e2e-prompt",
                                                        "key": "handbook.md"}},
                }],
            },
        },
    ]  # fmt: skip


def _webhook_injects(cluster: KindCluster) -> bool:
    """A server-side dry-run goes through the webhook: does it add the sidecar yet?"""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "probe", "namespace": APP_NS,
                     "annotations": {"promptcache.io/inject": "true"}},
        "spec": {"containers": [{"name": "c", "image": IMAGE}]},
    }  # fmt: skip
    out = cluster.kubectl(
        "create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(pod)
    )
    spec = json.loads(out)["spec"]
    names = [c["name"] for c in spec.get("initContainers", []) + spec["containers"]]
    return "promptcache" in names


@pytest.fixture(scope="session")
def app_pod(installed: KindCluster) -> dict[str, Any]:
    cluster = installed
    cluster.kubectl("create", "namespace", APP_NS)
    cluster.apply(*_policy_manifests())
    _poll(
        "the rendered policy ConfigMap",
        lambda: "promptcache-policy-" + POLICY in cluster.kubectl("get", "configmap", "-n", APP_NS),
    )
    _poll("the webhook injecting", lambda: _webhook_injects(cluster))
    cluster.apply(*_app_manifests())
    for name in ("simulator", "app"):
        cluster.kubectl("rollout", "status", "-n", APP_NS, f"deployment/{name}", "--timeout=300s")
    pods = cluster.get("pods", "-n", APP_NS, "-l", "app=app")["items"]
    running: list[dict[str, Any]] = [p for p in pods if p["status"].get("phase") == "Running"]
    assert len(running) == 1
    return running[0]


def test_app_pod_runs_the_injected_sidecar(app_pod: dict[str, Any]) -> None:
    spec = app_pod["spec"]
    sidecars = [c for c in spec.get("initContainers", []) if c["name"] == "promptcache"]
    assert sidecars, "no native sidecar (kind runs Kubernetes >= 1.29)"
    assert sidecars[0]["restartPolicy"] == "Always"
    env = {e["name"]: e.get("value") for e in spec["containers"][0].get("env", [])}
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:8787"
    statuses = app_pod["status"]["initContainerStatuses"]
    assert all(s["ready"] for s in statuses if s["name"] == "promptcache")
    annotations = app_pod["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "9787"
    assert json.loads(annotations["promptcache.io/status"])["policy"] == POLICY


def test_calls_through_the_sidecar_are_cached_and_counted(
    installed: KindCluster, app_pod: dict[str, Any]
) -> None:
    pod = app_pod["metadata"]["name"]
    out = installed.kubectl("exec", "-n", APP_NS, pod, "-c", "app", "--", "python", "-c", CLIENT)
    first, second = json.loads(out.strip().splitlines()[-1])
    assert first["cache_creation_input_tokens"] > 0  # the policy's static block was cached...
    assert second["cache_read_input_tokens"] > 0  # ...and read back on the next call
    # what Prometheus scrapes: the sidecar's admin port, through the API server's pod proxy
    raw = installed.kubectl(
        "get", "--raw", f"/api/v1/namespaces/{APP_NS}/pods/{pod}:9787/proxy/metrics"
    )
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(raw)
        for s in family.samples
    }
    ok = sum(v for (n, labels), v in samples.items()
             if n == "promptcache_requests_total" and ("outcome", "ok") in labels)  # fmt: skip
    cached = sum(v for (n, labels), v in samples.items()
                 if n == "promptcache_input_tokens_total" and ("kind", "cache_read") in labels
                 and ("policy", POLICY) in labels)  # fmt: skip
    assert ok >= 2
    assert cached == second["cache_read_input_tokens"]
