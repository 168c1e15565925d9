"""Request preparation fails open: the app's bytes go upstream unless a change was planned."""

from __future__ import annotations

import json
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from promptcache.policy import LoadedPolicy, PolicySpec
from promptcache.sidecar.metrics import Metrics
from promptcache.sidecar.planner import Plan, Planner, PlanRequest
from promptcache.sidecar.prepare import parse_body, prepare, request_model


class _Exploding(Planner):
    def plan(self, request: PlanRequest, *, settle: bool = True) -> Plan:
        raise RuntimeError("bug")


class _Rewriting(Planner):
    def __init__(self, *, observe: bool = False) -> None:
        self.observe = observe

    def plan(self, request: PlanRequest, *, settle: bool = True) -> Plan:
        body = {**request.body, "system": [{"type": "text", "text": "static"}]}
        if self.observe:
            return Plan(body=request.body, changed=True, observe_only=True)
        return Plan(body=body, changed=True)


class _PassThrough(Planner):
    def plan(self, request: PlanRequest, *, settle: bool = True) -> Plan:
        return Plan(body=request.body)


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


def _prepare(raw: bytes, planner: Planner, metrics: Metrics, route: Any = "messages") -> Any:
    parsed = parse_body(raw, "application/json", provider="anthropic", metrics=metrics)
    return prepare(
        route=route,
        raw=raw,
        parsed=parsed,
        provider="anthropic",
        policy=LoadedPolicy(name="p", spec=PolicySpec()),
        planner=planner,
        context=(),
        now=0.0,
        metrics=metrics,
    )


RAW = b'{"model": "claude-sonnet-4-6",  "messages": [{"role":"user","content":"caf\\u00e9"}]}'


def test_unchanged_plan_sends_the_very_same_bytes(metrics: Metrics) -> None:
    prepared = _prepare(RAW, _PassThrough(), metrics)
    assert prepared.body is RAW


def test_planner_exception_sends_original_and_counts(metrics: Metrics) -> None:
    prepared = _prepare(RAW, _Exploding(), metrics)
    assert prepared.body is RAW
    assert prepared.plan is None
    sample = metrics.registry.get_sample_value(
        "promptcache_transform_errors_total", {"provider": "anthropic", "stage": "plan"}
    )
    assert sample == 1


def test_rewrite_is_serialised_compactly(metrics: Metrics) -> None:
    prepared = _prepare(RAW, _Rewriting(), metrics)
    assert json.loads(prepared.body)["system"] == [{"type": "text", "text": "static"}]
    assert b": " not in prepared.body
    assert prepared.original is RAW


def test_observe_mode_sends_original(metrics: Metrics) -> None:
    prepared = _prepare(RAW, _Rewriting(observe=True), metrics)
    assert prepared.body is RAW
    assert prepared.plan is not None
    assert prepared.plan.observe_only


@pytest.mark.parametrize(
    ("options", "inject"),
    [(None, True), ({"include_usage": False}, True), ({"include_usage": True}, False)],
)
def test_streamed_chat_gets_include_usage(
    metrics: Metrics, options: dict[str, bool] | None, inject: bool
) -> None:
    body: dict[str, Any] = {"model": "gpt-4o", "messages": [], "stream": True}
    if options is not None:
        body["stream_options"] = options
    raw = json.dumps(body).encode()
    prepared = _prepare(raw, _PassThrough(), metrics, route="chat")
    assert prepared.inject_usage is inject
    assert json.loads(prepared.body)["stream_options"]["include_usage"] is True or not inject
    if not inject:
        assert prepared.body is raw


def test_unparseable_is_counted_and_model_is_other(metrics: Metrics) -> None:
    assert parse_body(b"{", "application/json", provider="openai", metrics=metrics) is None
    assert parse_body(b"{}", "text/plain", provider="openai", metrics=metrics) is None
    assert parse_body(b"", "application/json", provider="openai", metrics=metrics) is None
    assert request_model(None) == "other"
    assert request_model({"model": "gpt-4o"}) == "gpt-4o"
    assert request_model({"model": "a b"}) == "other"
    assert request_model({"model": "m" * 65}) == "other"


def test_planner_off_still_injects_usage_for_streams(metrics: Metrics) -> None:
    raw = b'{"model":"gpt-4o","messages":[],"stream":true}'
    parsed = parse_body(raw, "application/json", provider="openai", metrics=metrics)
    prepared = prepare(
        route="chat",
        raw=raw,
        parsed=parsed,
        provider="openai",
        policy=None,
        planner=None,
        context=(),
        now=0.0,
        metrics=metrics,
    )
    assert prepared.plan is None
    assert prepared.inject_usage
    assert json.loads(prepared.body)["stream_options"] == {"include_usage": True}
