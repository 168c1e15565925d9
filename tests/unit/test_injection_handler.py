"""The kopf mutating handler: namespace lookups, warnings and the patch fn it hands kopf."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf
from prometheus_client import CollectorRegistry, Counter
from promptcache_operator.kube import KubeClient
from promptcache_operator.runtime import MEMO_KEY, NamespaceLabels, Runtime
from promptcache_operator.settings import OperatorOptions, parse_injector_config
from promptcache_operator.webhook.injection import Injector
from promptcache_operator.webhook.server import inject_pod

LOGGER = logging.getLogger("test")


class FakeNamespaces(NamespaceLabels):
    def __init__(self, labels: dict[str, dict[str, str]]) -> None:
        super().__init__(KubeClient(login=lambda: None), ttl=0)
        self.labels = labels
        self.asked: list[str] = []

    async def get(self, namespace: str) -> dict[str, str] | None:
        self.asked.append(namespace)
        return self.labels.get(namespace)


def memo_with(namespaces: FakeNamespaces, *, ready: bool = True) -> kopf.Memo:
    injector = Injector(
        config=parse_injector_config({}), native=True, version="1", operator_namespace="pc"
    )
    runtime = Runtime(options=OperatorOptions(), namespaces=namespaces)
    runtime.injector = injector if ready else None
    memo = kopf.Memo()
    memo[MEMO_KEY] = runtime
    return memo


def pod(annotations: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"annotations": annotations, "namespace": "apps"},
        "spec": {"containers": [{"name": "app", "image": "a"}]},
    }


async def call(
    raw: dict[str, Any], memo: kopf.Memo, namespace: str = "apps"
) -> tuple[kopf.Patch, list[str]]:
    body = kopf.Body(raw)  # type: ignore[arg-type]
    patch = kopf.Patch(body=body)
    warnings: list[str] = []
    await inject_pod(
        body=body,
        patch=patch,
        warnings=warnings,
        namespace=namespace,
        memo=memo,
        logger=LOGGER,
        dryrun=False,
    )
    return patch, warnings


async def test_namespace_label_opts_in_and_is_looked_up_outside_excluded_namespaces() -> None:
    namespaces = FakeNamespaces({"apps": {"promptcache.io/inject": "enabled"}})
    memo = memo_with(namespaces)
    patch, _ = await call(pod({}), memo)
    assert patch.fns
    assert patch.as_json_patch()
    assert namespaces.asked == ["apps"]

    patch, _ = await call(pod({"promptcache.io/inject": "false"}), memo)
    assert not patch
    patch, _ = await call(pod({}), memo, namespace="kube-system")
    assert not patch
    assert namespaces.asked == ["apps", "apps"]  # excluded namespaces need no lookup


async def test_a_namespace_labelled_disabled_is_never_injected() -> None:
    namespaces = FakeNamespaces({"apps": {"promptcache.io/inject": "disabled"}})
    patch, _ = await call(pod({"promptcache.io/inject": "true"}), memo_with(namespaces))
    assert not patch


async def test_warnings_reach_the_admission_response_once() -> None:
    memo = memo_with(FakeNamespaces({}))
    annotations = {"promptcache.io/inject": "true", "promptcache.io/sidecar-cpu": "many"}
    patch, warnings = await call(pod(annotations), memo)
    assert warnings == [
        "promptcache: ignored promptcache.io/sidecar-cpu='many': not a quantity: 'many'"
    ]
    patch.as_json_patch()
    patch.as_json_patch()
    assert len(warnings) == 1


async def test_before_startup_pods_pass_untouched() -> None:
    patch, _ = await call(
        pod({"promptcache.io/inject": "true"}), memo_with(FakeNamespaces({}), ready=False)
    )
    assert not patch


class SlowClient(KubeClient):
    async def get(self, path: str, *, params: Any = None) -> dict[str, Any]:
        await asyncio.sleep(10)
        raise AssertionError("not reached")


async def test_a_slow_namespace_lookup_stays_inside_the_webhooks_budget() -> None:
    failures = Counter("lookups_failed", "test", registry=CollectorRegistry())
    labels = NamespaceLabels(
        SlowClient(login=lambda: None), ttl=10, timeout=0.05, failures=failures
    )
    started = asyncio.get_running_loop().time()
    assert await labels.get("apps") is None
    assert asyncio.get_running_loop().time() - started < 2
    assert failures._value.get() == 1
