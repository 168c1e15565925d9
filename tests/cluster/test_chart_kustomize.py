"""``k8s/``: the chart as plain manifests for kustomize, and the example app.

``k8s/base`` is generated from the chart by ``hack/render-k8s.py`` (cert-manager mode,
since plain manifests cannot mint a CA); these tests fail when it is stale, and send
both kustomizations to the real API server as a server-side dry-run -- the example
PromptPolicy is checked against the generated CRD's schema and CEL rules there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from promptcache.policy.schema import PolicySpec
from tests.cluster.chart_support import dry_run
from tests.cluster.controlplane import REPO_ROOT, ControlPlane

K8S = REPO_ROOT / "k8s"


def test_base_is_generated_from_the_chart(kubebin_dir: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "hack" / "render-k8s.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "HELM": str(kubebin_dir / "helm")},
    )
    assert proc.returncode == 0, proc.stderr


def test_base_applies(cluster_with_crds: ControlPlane) -> None:
    cp = cluster_with_crds
    cp.kubectl("create", "namespace", "promptcache-system", check=False)
    items = dry_run(cp, "-k", str(K8S / "base"))
    kinds = {i["kind"] for i in items}
    assert {"Deployment", "MutatingWebhookConfiguration", "Certificate", "Issuer"} <= kinds
    mwc = next(i for i in items if i["kind"] == "MutatingWebhookConfiguration")
    assert mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
        "promptcache-system/promptcache-webhook"
    )
    for item in items:
        labels = item["metadata"].get("labels", {})
        assert "helm.sh/chart" not in labels, item["metadata"]["name"]


def test_example_applies(cluster_with_crds: ControlPlane) -> None:
    cp = cluster_with_crds
    cp.kubectl("create", "namespace", "support", check=False)
    items = dry_run(cp, "-k", str(K8S / "examples"))
    by_kind = {i["kind"]: i for i in items}
    policy = by_kind["PromptPolicy"]
    PolicySpec.model_validate(policy["spec"])  # the sidecar's and operator's own model
    # every ConfigMap key the policy references exists in the example's ConfigMap
    data = by_kind["ConfigMap"]["data"]
    for block in policy["spec"]["staticBlocks"]:
        ref = block["contentFrom"]["configMapKeyRef"]
        assert ref["name"] == by_kind["ConfigMap"]["metadata"]["name"]
        assert ref["key"] in data
    annotations = by_kind["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["promptcache.io/inject"] == "true"
    assert annotations["promptcache.io/policy"] == policy["metadata"]["name"]


def test_example_bad_policy_is_refused(cluster_with_crds: ControlPlane) -> None:
    cp = cluster_with_crds
    cp.kubectl("create", "namespace", "support", check=False)
    policy = yaml.safe_load((K8S / "examples" / "promptpolicy.yaml").read_text())
    policy["metadata"]["namespace"] = "support"
    policy["spec"]["staticBlocks"][0]["ttl"] = "2h"
    proc = cp.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(policy), check=False
    )
    assert proc.returncode != 0
    assert "ttl" in proc.stderr
