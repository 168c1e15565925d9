"""Deployment annotations carried into (and out of) the pod template."""

from __future__ import annotations

from typing import Any

import pytest
from promptcache_operator.deployments import MANAGED_ANNOTATION, concerns_us, template_patch

INJECT = "promptcache.io/inject"
POLICY = "promptcache.io/policy"


def deployment(
    meta: dict[str, str] | None = None, template: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "metadata": {"name": "app", "annotations": meta or {}},
        "spec": {"template": {"metadata": {"annotations": template or {}}, "spec": {}}},
    }


def apply(dep: dict[str, Any], patch: dict[str, Any] | None) -> dict[str, Any]:
    """A JSON merge patch (RFC 7386) applied to a copy of ``dep``."""

    def merge(target: Any, change: Any) -> Any:
        if not isinstance(change, dict):
            return change
        out = dict(target) if isinstance(target, dict) else {}
        for key, value in change.items():
            if value is None:
                out.pop(key, None)
            else:
                out[key] = merge(out.get(key), value)
        return out

    result: dict[str, Any] = merge(dep, patch or {})
    return result


def template_of(dep: dict[str, Any]) -> dict[str, str]:
    annotations: dict[str, str] = dep["spec"]["template"]["metadata"].get("annotations", {})
    return annotations


def test_annotating_the_deployment_annotates_the_template() -> None:
    dep = deployment({INJECT: "true", POLICY: "support"})
    patch = template_patch(dep)
    assert patch == {
        "spec": {"template": {"metadata": {"annotations": {INJECT: "true", POLICY: "support"}}}},
        "metadata": {"annotations": {MANAGED_ANNOTATION: f"{INJECT},{POLICY}"}},
    }
    after = apply(dep, patch)
    assert template_of(after) == {INJECT: "true", POLICY: "support"}
    assert template_patch(after) is None  # converged


def test_changing_the_policy_updates_the_template() -> None:
    dep = apply(
        deployment({INJECT: "true", POLICY: "a"}),
        template_patch(deployment({INJECT: "true", POLICY: "a"})),
    )
    dep["metadata"]["annotations"][POLICY] = "b"
    after = apply(dep, template_patch(dep))
    assert template_of(after)[POLICY] == "b"
    assert template_patch(after) is None


def test_removing_the_annotations_removes_what_the_operator_wrote() -> None:
    dep = deployment({INJECT: "true", POLICY: "support"})
    dep = apply(dep, template_patch(dep))
    del dep["metadata"]["annotations"][POLICY]
    dep = apply(dep, template_patch(dep))
    assert template_of(dep) == {INJECT: "true"}
    assert dep["metadata"]["annotations"][MANAGED_ANNOTATION] == INJECT
    del dep["metadata"]["annotations"][INJECT]
    patch = template_patch(dep)
    dep = apply(dep, patch)
    assert template_of(dep) == {}
    assert MANAGED_ANNOTATION not in dep["metadata"]["annotations"]
    assert template_patch(dep) is None


def test_a_template_annotated_by_the_user_is_left_alone() -> None:
    dep = deployment(template={INJECT: "true", POLICY: "mine"})
    assert template_patch(dep) is None
    assert not concerns_us(annotations=dep["metadata"]["annotations"])

    # Same value on the Deployment: nothing to write, and the key is not ours to remove.
    dep["metadata"]["annotations"][INJECT] = "true"
    patch = template_patch(dep)
    assert patch is None
    dep = apply(dep, patch)
    del dep["metadata"]["annotations"][INJECT]
    assert template_patch(dep) is None
    assert template_of(dep) == {INJECT: "true", POLICY: "mine"}


def test_the_deployment_wins_over_a_different_template_value() -> None:
    dep = deployment({POLICY: "new"}, template={INJECT: "true", POLICY: "old"})
    after = apply(dep, template_patch(dep))
    assert template_of(after) == {INJECT: "true", POLICY: "new"}
    assert after["metadata"]["annotations"][MANAGED_ANNOTATION] == POLICY


def test_other_annotations_are_untouched() -> None:
    dep = deployment({INJECT: "true", "team": "x"}, template={"checksum/config": "abc"})
    after = apply(dep, template_patch(dep))
    assert template_of(after) == {"checksum/config": "abc", INJECT: "true"}
    assert after["metadata"]["annotations"]["team"] == "x"


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        ({INJECT: "true"}, True),
        ({POLICY: "p"}, True),
        ({MANAGED_ANNOTATION: INJECT}, True),
        ({"other": "x"}, False),
        ({}, False),
    ],
)
def test_only_deployments_with_our_annotations_concern_us(
    annotations: dict[str, str], expected: bool
) -> None:
    assert concerns_us(annotations=annotations) is expected


def test_a_deployment_without_template_metadata() -> None:
    dep = {"metadata": {"annotations": {INJECT: "true"}}, "spec": {"template": {"spec": {}}}}
    patch = template_patch(dep)
    assert patch is not None
    assert patch["spec"]["template"]["metadata"]["annotations"] == {INJECT: "true"}


def test_excluded_namespaces_are_out_of_the_watchers_scope() -> None:
    import kopf
    from promptcache_operator.handlers import configmap_concerns_us
    from promptcache_operator.runtime import MEMO_KEY, Runtime
    from promptcache_operator.settings import OperatorOptions, parse_injector_config
    from promptcache_operator.webhook.injection import Injector

    runtime = Runtime(options=OperatorOptions())
    runtime.injector = Injector(
        config=parse_injector_config({}), native=True, version="1", operator_namespace="pc"
    )
    memo = kopf.Memo()
    memo[MEMO_KEY] = runtime
    annotations = {"promptcache.io/inject": "true"}
    assert concerns_us(annotations, namespace="shop", memo=memo)
    assert not concerns_us(annotations, namespace="kube-system", memo=memo)
    assert not concerns_us(annotations, namespace="pc", memo=memo)
    labels = {"app.kubernetes.io/managed-by": "promptcache", "promptcache.io/policy": "p"}
    assert configmap_concerns_us(name="x", namespace="shop", labels=labels, memo=memo)
    assert not configmap_concerns_us(name="x", namespace="kube-system", labels=labels, memo=memo)
