"""The cluster tier's own infrastructure works: API server, controllers, teardown."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.controlplane import ControlPlane, ControlPlaneError

POLL_TIMEOUT = 60.0


def _get_json(cp: ControlPlane, *args: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(cp.kubectl("get", *args, "-o", "json").stdout)
    return data


def _owned_by(obj: dict[str, Any], kind: str, name: str) -> bool:
    return any(
        ref.get("kind") == kind and ref.get("name") == name
        for ref in obj["metadata"].get("ownerReferences", [])
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def test_api_server_answers(control_plane: ControlPlane) -> None:
    version = json.loads(control_plane.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == "v1.34.4"
    assert control_plane.server_version() == (1, 34)

    names = {ns["metadata"]["name"] for ns in _get_json(control_plane, "namespaces")["items"]}
    assert {"default", "kube-system", "kube-public"} <= names

    # The admin user really is a cluster admin under RBAC.
    can = control_plane.kubectl("auth", "can-i", "*", "*", "--all-namespaces")
    assert can.stdout.strip() == "yes"
    assert control_plane.ca_pem.startswith(b"-----BEGIN CERTIFICATE-----")
    assert control_plane.server.startswith("https://127.0.0.1:")


def test_deployment_gets_replicaset_and_pending_pod(control_plane: ControlPlane) -> None:
    ns = f"cp-{uuid.uuid4().hex[:8]}"
    control_plane.kubectl("create", "namespace", ns)
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "app", "namespace": ns},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "app"}},
            "template": {
                "metadata": {"labels": {"app": "app"}},
                "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1"}]},
            },
        },
    }
    try:
        control_plane.kubectl("apply", "-f", "-", input=json.dumps(deployment))
        deadline = time.monotonic() + POLL_TIMEOUT
        replicasets: list[dict[str, Any]] = []
        pods: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            replicasets = [
                rs
                for rs in _get_json(control_plane, "replicasets", "-n", ns)["items"]
                if _owned_by(rs, "Deployment", "app")
            ]
            rs_names = {rs["metadata"]["name"] for rs in replicasets}
            pods = [
                pod
                for pod in _get_json(control_plane, "pods", "-n", ns)["items"]
                if any(_owned_by(pod, "ReplicaSet", name) for name in rs_names)
            ]
            if pods:
                break
            time.sleep(0.5)
        assert replicasets, f"no ReplicaSet for the Deployment within {POLL_TIMEOUT:.0f}s"
        assert pods, f"no Pod for the ReplicaSet within {POLL_TIMEOUT:.0f}s"
        pod = pods[0]
        assert pod["status"].get("phase") == "Pending"  # no scheduler, no kubelet
        assert pod["spec"]["containers"][0]["image"] == "example.invalid/app:1"
    finally:
        control_plane.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_failed_start_reports_log_and_leaves_no_processes(
    kubebin_dir: Path, tmp_path: Path
) -> None:
    # etcd starts (about a second), then kube-apiserver rejects an unknown flag and exits:
    # the error must quote the apiserver log, and stop() must already have reaped etcd.
    cp = ControlPlane(kubebin_dir, tmp_path, extra_apiserver_args=["--no-such-flag-promptcache"])
    with pytest.raises(ControlPlaneError, match="no-such-flag-promptcache") as excinfo:
        cp.start()
    assert "kube-apiserver" in str(excinfo.value)
    pids = cp.pids
    assert set(pids) == {"etcd", "kube-apiserver"}
    assert not [name for name, pid in pids.items() if _pid_alive(pid)]
    cp.stop()  # idempotent


def test_stop_leaves_no_processes(kubebin_dir: Path, tmp_path: Path) -> None:
    with ControlPlane(kubebin_dir, tmp_path) as cp:
        pids = cp.pids
        assert set(pids) == {"etcd", "kube-apiserver", "kube-controller-manager"}
        assert all(_pid_alive(pid) for pid in pids.values())
    assert not [name for name, pid in pids.items() if _pid_alive(pid)]
