"""Native sidecars only where every kubelet has them; regular-container mode done right.

Before the operator starts, this module registers Node objects whose kubelets report
1.34 and 1.28 (as after a control-plane upgrade whose nodes are not all upgraded yet).
The operator, with the chart's default ``nativeSidecar: auto``, reads them with its
read-only node rights and injects regular containers: a native sidecar would hang
every pod on the 1.28 node in ``Init``. In that mode the sidecar is the first app
container and holds the app's start until it is ready, and a Job's pods are skipped
(a sidecar that never exits would keep the Job from completing), visibly.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from tests.cluster.controlplane import ControlPlane
from tests.cluster.operator_harness import (
    InjectionSetup,
    Obj,
    apply,
    events_for,
    injection,
    pods_of,
    wait_for,
)

INJECT = "promptcache.io/inject"
KUBELETS = {"v1.34.4": "new", "v1.28.9": "old"}


def make_nodes(cp: ControlPlane, tag: str) -> list[str]:
    names = []
    for version, age in KUBELETS.items():
        name = f"pc-node-{age}-{tag}"
        apply(cp, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
        status = {"status": {"nodeInfo": {"kubeletVersion": version}}}
        cp.kubectl(
            "patch", "node", name, "--subresource=status", "--type=merge", "-p", json.dumps(status)
        )
        names.append(name)
    return names


@pytest.fixture(scope="module")
def setup(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InjectionSetup]:
    nodes = make_nodes(control_plane, uuid.uuid4().hex[:6])
    try:
        with injection(control_plane, tmp_path_factory.mktemp("container-mode")) as s:
            yield s
    finally:
        for name in nodes:  # later modules expect a node-less cluster (native sidecars)
            control_plane.kubectl("delete", "node", name, "--wait=false", check=False)


def test_an_old_kubelet_means_regular_containers(setup: InjectionSetup) -> None:
    log = setup.operator.log_text()
    assert "oldest kubelet 1.28: regular-container sidecars (nativeSidecar: auto)" in log


def test_the_sidecar_goes_first_and_holds_the_app(setup: InjectionSetup) -> None:
    cp = setup.cp
    ns = setup.namespace("pc-cm")
    deployment: Obj = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}, "annotations": {INJECT: "true"}},
                "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1"}]},
            },
        },
    }
    apply(cp, deployment)
    pod = wait_for(lambda: pods_of(cp, ns, "app=web"), what="the Deployment's pod")[0]
    containers = pod["spec"]["containers"]
    assert [c["name"] for c in containers] == ["promptcache", "app"]
    assert "initContainers" not in pod["spec"]
    hook = containers[0]["lifecycle"]["postStart"]["exec"]["command"]
    assert hook[0] == "python3"
    assert hook[-2:] == ["http://127.0.0.1:9787/readyz", "60"]
    status = json.loads(pod["metadata"]["annotations"]["promptcache.io/status"])
    assert status["sidecar"] == "container"


def test_job_pods_are_skipped_visibly(setup: InjectionSetup) -> None:
    cp = setup.cp
    ns = setup.namespace("pc-job")
    job: Obj = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "nightly", "namespace": ns},
        "spec": {
            "template": {
                "metadata": {"labels": {"app": "nightly"}, "annotations": {INJECT: "true"}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "batch", "image": "example.invalid/batch:1"}],
                },
            }
        },
    }
    apply(cp, job)
    pod = wait_for(lambda: pods_of(cp, ns, "app=nightly"), what="the Job's pod")[0]
    assert [c["name"] for c in pod["spec"]["containers"]] == ["batch"]
    assert "Job" in pod["metadata"]["annotations"]["promptcache.io/skipped"]

    def skipped_event() -> Obj | None:
        events = events_for(cp, ns, "nightly")
        return next((e for e in events if e["reason"] == "InjectionSkipped"), None)

    event = wait_for(skipped_event, timeout=20, what="InjectionSkipped Event on the Job")
    assert event["involvedObject"]["kind"] == "Job"
    assert setup.operator.metric("promptcache_webhook_admissions_total", result="skipped") >= 1
