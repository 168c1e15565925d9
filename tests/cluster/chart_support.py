"""Helpers shared by the chart tests (``test_chart_*.py``): helm, rendering, CRDs.

The CRDs of the kinds the chart renders but does not own (prometheus-operator's
PodMonitor/PrometheusRule, cert-manager's Issuer/Certificate/ClusterIssuer) are the
projects' real CRDs, taken from their Go modules (pinned in :data:`THIRD_PARTY_CRDS`,
fetched once through the Go module proxy into the Go module cache, the same way the
kubebin build gets its sources), so a server-side dry-run validates those objects
against the true schemas rather than a permissive stub.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.controlplane import REPO_ROOT, ControlPlane

CHART = REPO_ROOT / "charts" / "promptcache"
ALL_ON = CHART / "ci" / "all-on-values.yaml"
RELEASE = "promptcache"
NAMESPACE = "promptcache-system"
VALUE_SETS: dict[str, list[str]] = {"defaults": [], "all-on": ["-f", str(ALL_ON)]}

# module@version -> CRD files inside it (the projects' own generated CRDs).
THIRD_PARTY_CRDS: dict[str, list[str]] = {
    "github.com/prometheus-operator/prometheus-operator@v0.85.0": [
        "example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml",
        "example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml",
    ],
    "github.com/cert-manager/cert-manager@v1.19.1": [
        "deploy/crds/cert-manager.io_certificates.yaml",
        "deploy/crds/cert-manager.io_issuers.yaml",
        "deploy/crds/cert-manager.io_clusterissuers.yaml",
    ],
}

Manifest = dict[str, Any]

_crds_applied: set[str] = set()  # API server URLs that have the CRDs already


def helm(kubebin_dir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the pinned helm without a cluster (lint, template)."""
    proc = subprocess.run(
        [str(kubebin_dir / "helm"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check and proc.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def render(kubebin_dir: Path, *values: str, namespace: str = NAMESPACE) -> list[Manifest]:
    """``helm template`` of the chart, parsed."""
    out = helm(kubebin_dir, "template", RELEASE, str(CHART), "-n", namespace, *values).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def only(docs: list[Manifest], kind: str, name_suffix: str = "") -> Manifest:
    """The one object of ``kind`` whose name ends with ``name_suffix``."""
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"expected one {kind} *{name_suffix}, got {len(found)}"
    return found[0]


def dry_run(cp: ControlPlane, *args: str, input: str | None = None) -> list[Manifest]:
    """``kubectl apply --dry-run=server``; the objects as the API server would store them."""
    proc = cp.kubectl("apply", "--dry-run=server", "-o", "json", *args, input=input, check=False)
    assert proc.returncode == 0, proc.stderr
    accepted = json.loads(proc.stdout)
    items: list[Manifest] = accepted["items"] if accepted.get("kind") == "List" else [accepted]
    return items


def go_module_dir(module: str, work_dir: Path) -> Path:
    """The extracted ``module@version`` from the Go module cache (downloaded once)."""
    try:
        proc = subprocess.run(
            ["go", "mod", "download", "-json", module],
            cwd=work_dir,  # outside any go.mod
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
            env={**os.environ, "GOFLAGS": "-mod=mod"},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"go mod download {module}: {exc}", pytrace=False)
    info = json.loads(proc.stdout or "{}")
    if proc.returncode != 0 or info.get("Error") or "Dir" not in info:
        pytest.fail(f"go mod download {module}: {info.get('Error') or proc.stderr}", pytrace=False)
    return Path(info["Dir"])


def apply_crds(cp: ControlPlane, work_dir: Path) -> None:
    """Apply the chart's CRDs and the third-party ones for real (once per API server)."""
    if cp.server in _crds_applied:
        return
    files = sorted(CHART.glob("crds/*.yaml"))
    for module, paths in THIRD_PARTY_CRDS.items():
        root = go_module_dir(module, work_dir)
        files += [root / p for p in paths]
    for path in files:
        cp.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    names = [yaml.safe_load(p.read_text())["metadata"]["name"] for p in files]
    cp.kubectl("wait", "--for=condition=Established", "--timeout=60s", *[f"crd/{n}" for n in names])
    _crds_applied.add(cp.server)
