"""``deploymentAnnotations.enabled=false``: the chart grants no right on Deployments, and
the operator (``--no-deployment-annotations``) works without one.

The operator runs with exactly the ClusterRole the chart renders with the switch off:
it renders PromptPolicies and injects pods as before, never touches a Deployment (an
annotated Deployment's pod template stays as it is), and logs no authorization error.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster.controlplane import ControlPlane
from tests.cluster.operator_harness import (
    InjectionSetup,
    apply,
    get_json,
    get_or_none,
    injection,
    prompt_policy,
    wait_for,
)


@pytest.fixture(scope="module")
def setup(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InjectionSetup]:
    with injection(
        control_plane,
        tmp_path_factory.mktemp("no-deployments"),
        set_values=["deploymentAnnotations.enabled=false"],
        operator_args=["--no-deployment-annotations"],
    ) as s:
        yield s


def test_no_deployment_rights_and_the_operator_still_works(setup: InjectionSetup) -> None:
    cp = setup.cp
    kubeconfig = str(setup.operator.kubeconfig)
    for verb in ("patch", "list", "watch"):
        proc = cp.kubectl(
            "--kubeconfig", kubeconfig, "auth", "can-i", verb, "deployments.apps", "-A",
            check=False,
        )  # fmt: skip
        assert proc.stdout.strip() == "no", verb

    ns = setup.namespace("pc-nodep")
    apply(cp, prompt_policy("p", ns, {"staticBlocks": [{"name": "s", "content": "Hello."}]}))
    wait_for(
        lambda: get_or_none(cp, "configmap", "-n", ns, "promptcache-policy-p"),
        what="the rendered ConfigMap",
    )
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": ns,
            "annotations": {"promptcache.io/inject": "true", "promptcache.io/policy": "p"},
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1"}]},
            },
        },
    }
    apply(cp, deployment)
    # the feature is off: the template is not annotated, so its pods get no sidecar
    pod = wait_for(lambda: get_json(cp, "pods", "-n", ns, "-l", "app=web")["items"], what="a pod")[
        0
    ]
    assert "initContainers" not in pod["spec"]
    template = get_json(cp, "deployment", "-n", ns, "web")["spec"]["template"]["metadata"]
    assert "promptcache.io/inject" not in (template.get("annotations") or {})
    log = setup.operator.log_text()
    assert "Deployment annotations off" in log
    assert "forbidden" not in log.lower(), log[-2000:]
