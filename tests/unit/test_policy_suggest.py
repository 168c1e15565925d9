"""``policy suggest`` -> ``policy check`` -> the same plan; ``explain --templates`` shows
shapes only."""

from __future__ import annotations

import json
import random
import string
from pathlib import Path
from typing import Any

import pytest
import yaml

from promptcache.cli import main
from promptcache.policy import load_policy_file
from promptcache.sidecar.planner import Plan, Planner, PlanRequest

STATIC = "\n".join(
    f"Rule {i}: when asked about topic {i}, answer in two sentences and cite policy {i}."
    for i in range(90)
)
SECRETS = ("Zanzibar-Customer", "Ultraviolet-Docs", "Request ID")


def requests() -> list[dict[str, Any]]:
    """Three conversations of three turns: a timestamp and a request id on top, the
    static instructions, a customer block per conversation and retrieved text per request."""
    rng = random.Random(7)
    out: list[dict[str, Any]] = []
    n = 0
    for conv in range(3):
        customer = f"Zanzibar-Customer: {''.join(rng.choices(string.ascii_lowercase, k=12))}"
        messages: list[dict[str, Any]] = []
        for turn in range(3):
            n += 1
            docs = " ".join("".join(rng.choices(string.ascii_lowercase, k=6)) for _ in range(20))
            system = (
                f"Current time: 2026-05-0{turn + 1}T10:{n:02d}:00Z\nRequest ID: r-{n}\n\n"
                f"{STATIC}\n\n{customer}\nUltraviolet-Docs: {docs}"
            )
            messages = [*messages, {"role": "user", "content": f"conv {conv} question {turn}"}]
            out.append(
                {
                    "model": "claude-sonnet-4-6",
                    "max_tokens": 64,
                    "system": system,
                    "messages": list(messages),
                }
            )
            messages.append({"role": "assistant", "content": f"answer {turn}"})
    return out


def jsonl(tmp_path: Path) -> Path:
    path = tmp_path / "requests.jsonl"
    path.write_text("\n".join(json.dumps(b) for b in requests()) + "\n", "utf-8")
    return path


def normalised(plan: Plan) -> str:
    return " ".join((plan.context_text or "").replace("</context>", "").split()[3:])


def test_suggested_policy_passes_check_and_plans_like_the_learner(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = jsonl(tmp_path)
    out = tmp_path / "out"
    assert main(["policy", "suggest", str(path), "--name", "agent", "--out", str(out)]) == 0
    assert main(["policy", "check", str(out / "agent.local.yaml")]) == 0
    cluster = yaml.safe_load((out / "agent.promptpolicy.yaml").read_text())
    config_map = yaml.safe_load((out / "agent.configmap.yaml").read_text())
    refs = [b["match"]["exactFrom"]["configMapKeyRef"] for b in cluster["spec"]["staticBlocks"]]
    assert {r["name"] for r in refs} == {config_map["metadata"]["name"]}
    assert {r["key"] for r in refs} == set(config_map["data"])
    assert cluster["spec"]["volatile"]["keepInPlace"]

    policy = load_policy_file(out / "agent.local.yaml")
    learner, pinned = Planner(), Planner(learning=False)
    for i, body in enumerate(requests()):  # in order, as suggest saw them
        learned = learner.plan(PlanRequest(route="messages", body=body, now=float(i)))
        by_policy = pinned.plan(
            PlanRequest(
                route="messages",
                body=body,
                policy_name=policy.name,
                policy=policy.spec,
                now=float(i),
            )
        )
        if i < 3:  # learning: the customer block looked stable within the first conversation
            continue
        assert learned.learned is not None
        assert by_policy.static_hash == learned.static_hash
        assert [b.path for b in by_policy.breakpoints] == [b.path for b in learned.breakpoints]
        kept = [json.dumps(p.body["system"]).count("Zanzibar") for p in (learned, by_policy)]
        # The learner decides what a conversation keeps on the first turn it sees of it,
        # from what it knows then: from the third conversation on, it keeps the customer
        # block in place from the first turn, as the policy's keepInPlace rule does.
        if i >= 6:
            assert kept[0] == kept[1] == 1


def test_explain_templates_prints_shapes_and_never_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = jsonl(tmp_path)
    assert main(["explain", "--templates", str(path)]) == 0
    shown = capsys.readouterr().out
    assert "learned" in shown
    assert "stable" in shown
    assert "request" in shown
    for secret in (*SECRETS, "Rule 1", "Current time", "answer in two sentences"):
        assert secret not in shown
    assert main(["explain", "--templates", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    (template,) = [t for t in report["templates"] if t["state"] == "learned"]
    assert template["requests"] == 9
    assert {s["kind"] for s in template["spans"]} >= {"stable", "request"}
