"""The fail-open guard around kopf's webhook function (the cluster tier drives the same
path through the real API server with a pod whose memory annotation is ``1Ei``)."""

from __future__ import annotations

import asyncio
from typing import Any

from promptcache_operator.webhook.guard import FAIL_OPEN_WARNING, guard


def review(namespace: str = "apps", **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u-1",
            "namespace": namespace,
            "object": {"metadata": dict(meta), "spec": {}},
        },
    }


def recorder() -> tuple[list[tuple[str, str]], Any]:
    seen: list[tuple[str, str]] = []

    def on_failure(request: dict[str, Any], reason: str, detail: str) -> None:
        seen.append((reason, detail))

    return seen, on_failure


async def test_an_exception_lets_the_pod_through_unmodified() -> None:
    async def broken(request: dict[str, Any], **_: Any) -> dict[str, Any]:
        raise ValueError("could not convert string to float: '1Ei'")

    seen, on_failure = recorder()
    out = await guard(broken, budget=1, on_failure=on_failure)(review())
    assert out["response"] == {"uid": "u-1", "allowed": True, "warnings": [FAIL_OPEN_WARNING]}
    assert seen == [("error", "ValueError: could not convert string to float: '1Ei'")]


async def test_a_denial_from_a_failed_handler_becomes_an_allow() -> None:
    async def denied(request: dict[str, Any], **_: Any) -> dict[str, Any]:
        return {
            "response": {
                "uid": "u-1",
                "allowed": False,
                "patch": "W10=",
                "status": {"message": "boom\nwith a traceback", "code": 500},
            }
        }

    seen, on_failure = recorder()
    out = await guard(denied, budget=1, on_failure=on_failure)(review())
    assert out["response"]["allowed"] is True
    assert "patch" not in out["response"]
    assert seen == [("error", "boom with a traceback")]


async def test_no_answer_within_the_budget_lets_the_pod_through() -> None:
    async def slow(request: dict[str, Any], **_: Any) -> dict[str, Any]:
        await asyncio.sleep(5)
        raise AssertionError("not reached")

    seen, on_failure = recorder()
    out = await guard(slow, budget=0.05, on_failure=on_failure)(review())
    assert out["response"]["allowed"] is True
    assert seen == [("timeout", "no decision within 0.05s")]


async def test_a_good_answer_passes_and_the_namespace_is_filled_in() -> None:
    got: list[dict[str, Any]] = []

    async def fine(request: dict[str, Any], **_: Any) -> dict[str, Any]:
        got.append(request)
        return {"response": {"uid": "u-1", "allowed": True, "patch": "W10="}}

    seen, on_failure = recorder()
    out = await guard(fine, budget=1, on_failure=on_failure)(review(generateName="web-"))
    assert out == {"response": {"uid": "u-1", "allowed": True, "patch": "W10="}}
    assert got[0]["request"]["object"]["metadata"]["namespace"] == "apps"
    assert seen == []


async def test_a_failing_recorder_still_fails_open() -> None:
    async def broken(request: dict[str, Any], **_: Any) -> dict[str, Any]:
        raise RuntimeError("x")

    def on_failure(request: dict[str, Any], reason: str, detail: str) -> None:
        raise OSError("metrics down")

    out = await guard(broken, budget=1, on_failure=on_failure)(review())
    assert out["response"]["allowed"] is True
