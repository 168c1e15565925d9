"""Two operator replicas, as the chart runs them: one reconciles, both serve the webhook.

kopf's peering pauses *every* peer of equal priority, so each replica draws a random
priority (``promptcache_operator.cli``). Here two real operator processes join one
ClusterKopfPeering (the chart's kopf.dev CRD). kopf starts every peer paused and
resumes the one that finds no peer of higher priority: exactly one reconciles, both
answer admission requests with the sidecar patch, and when the active one stops (it
withdraws its keep-alive on the way out), the other resumes and takes over.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.controlplane import ControlPlane
from tests.cluster.operator_harness import (
    CHART,
    OPERATOR_NAMESPACE,
    OperatorProcess,
    apply,
    apply_crd,
    chart_injector_config,
    chart_manifests,
    make_webhook_pki,
    prompt_policy,
    wait_condition,
    wait_for,
)

RESUMED = "Resuming operations after the pause"
PAUSED = "Pausing operations in favour of"


def priority(op: OperatorProcess) -> int:
    found = re.search(r"\(priority (\d+)\)", op.log_text())
    assert found, op.log_tail()
    return int(found.group(1))


def paused(op: OperatorProcess) -> bool:
    """Whether kopf's last word in this log is a pause (peers start paused, silently)."""
    log = op.log_text()
    return log.rfind(RESUMED) < log.rfind(PAUSED) or RESUMED not in log


@pytest.fixture(scope="module")
def peers(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[OperatorProcess]]:
    cp = control_plane
    work = tmp_path_factory.mktemp("peering")
    apply_crd(cp)
    cp.kubectl("apply", "-f", str(CHART / "crds" / "clusterkopfpeerings.kopf.dev.yaml"))
    cp.kubectl(
        "wait", "--for", "condition=established", "--timeout=60s",
        "crd/clusterkopfpeerings.kopf.dev",
    )  # fmt: skip
    name = f"pc-peering-{uuid.uuid4().hex[:6]}"
    apply(
        cp, {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": name}}
    )
    apply(cp, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}})
    config = chart_injector_config(chart_manifests(cp))
    pki = make_webhook_pki(work / "certs")
    operators = []
    for i in range(2):
        (work / f"op{i}").mkdir()
        operators.append(
            OperatorProcess(cp, work / f"op{i}", injector_config=config, pki=pki, peering=name)
        )
    try:
        for op in operators:
            op.start()
        yield operators
    finally:
        for op in operators:
            op.stop()
        cp.kubectl("delete", "clusterkopfpeering", name, check=False)


BRIEF = {"staticBlocks": [{"name": "s", "content": "Be brief."}]}


def test_one_reconciles_both_inject_and_the_other_takes_over(
    control_plane: ControlPlane, peers: list[OperatorProcess], tmp_path: Path
) -> None:
    cp = control_plane
    # The higher random priority wins; the other pauses (at once, or when it sees it).
    active, standby = sorted(peers, key=priority, reverse=True)
    assert priority(active) != priority(standby)
    wait_for(lambda: RESUMED in active.log_text(), timeout=30, what="the active peer resuming")
    wait_for(lambda: paused(standby), timeout=30, what="the standby pausing")

    # Both replicas answer admission requests, the paused one included.
    pod = {
        "metadata": {"generateName": "app-", "annotations": {"promptcache.io/inject": "true"}},
        "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1"}]},
    }
    for op in peers:
        response = op.review(pod, namespace="apps")["response"]
        assert response["allowed"] is True
        assert response["patchType"] == "JSONPatch"

    ns = f"pc-peer-{uuid.uuid4().hex[:6]}"
    apply(cp, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    try:
        apply(cp, prompt_policy("first", ns, BRIEF))
        wait_condition(
            cp, ns, "first", "Ready", status="True", what="policy rendered by the active peer"
        )
        assert "ConfigMap promptcache-policy-first created" in active.log_text()
        assert "promptcache-policy-first" not in standby.log_text()

        # The active peer leaves (a rollout, a node drain): the standby resumes.
        active.stop()
        wait_for(lambda: RESUMED in standby.log_text(), timeout=60, what="the standby resuming")
        apply(cp, prompt_policy("second", ns, BRIEF))
        wait_condition(
            cp,
            ns,
            "second",
            "Ready",
            status="True",
            timeout=60,
            what="policy rendered after failover",
        )
        assert "ConfigMap promptcache-policy-second created" in standby.log_text()
    finally:
        cp.kubectl("delete", "namespace", ns, "--wait=false", check=False)
