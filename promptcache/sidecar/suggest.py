"""``promptcache policy suggest REQUESTS.jsonl``: what the learner learned, as a PromptPolicy.

Offline, from captured request bodies (one JSON body per line): the same planner the
sidecar runs learns the templates, and each learned template becomes

- one ``match`` static block per stable stretch of its system prompt, its text in a
  ConfigMap (``exactFrom.configMapKeyRef``) so the policy stays small and the text is
  reviewed as a file;
- ``volatile: {action: relocate, unmatchedSystem: relocate}``: what is not static moves
  behind the history, as the learner moved per-request text;
- ``keepInPlace`` rules for what was the same on every turn of a conversation.

It writes, into ``--out`` (default: the current folder): ``NAME.promptpolicy.yaml`` and
``NAME.configmap.yaml`` to apply to a cluster, and ``NAME.local.yaml`` with the texts as
files beside it (``exactFrom.file``) for ``promptcache policy check`` and a local
sidecar. Planning the same requests under the suggested policy gives the same static
prefix (the same ``static_hash``), relocates the same text and keeps the same text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from promptcache.sidecar.learner.template import LABEL_MAX
from promptcache.sidecar.planner import Planner, PlanRequest, Route
from promptcache.sidecar.planner.anthropic import system_sources as anthropic_system
from promptcache.sidecar.planner.builder import learned_stretches
from promptcache.sidecar.planner.openai import system_sources as openai_system

MAX_BLOCKS = 16
"""A policy holds at most this many static blocks (the schema's limit)."""
MAX_KEEP = 16


class SuggestError(Exception):
    """A one-line reason the requests file cannot be used."""


@dataclass(slots=True)
class _Learned:
    uses: int = 0
    stretches: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def read_requests(path: Path, route: str | None = None) -> Iterator[tuple[Route, dict[str, Any]]]:
    """The request bodies of a JSON Lines file, with the route of each (from its shape)."""
    try:
        lines = path.read_text("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SuggestError(f"{path}: cannot read: {type(exc).__name__}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            body = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SuggestError(f"{path}:{n}: not valid JSON: {exc.msg}") from None
        if not isinstance(body, dict):
            raise SuggestError(f"{path}:{n}: expected a JSON object (a request body)")
        yield route_of(body, route), body


def route_of(body: dict[str, Any], chosen: str | None = None) -> Route:
    if chosen in ("messages", "chat", "responses"):
        return chosen  # type: ignore[return-value]
    if "input" in body or "instructions" in body:
        return "responses"
    messages = body.get("messages")
    first = messages[0] if isinstance(messages, list) and messages else None
    if isinstance(first, dict) and first.get("role") in ("system", "developer"):
        return "chat"
    return "messages"


def system_text(route: Route, body: dict[str, Any]) -> str:
    """The system text the learner sees for ``body`` with no policy."""
    if route == "messages":
        sources = anthropic_system(body.get("system"))
    else:
        sources = openai_system(body, route)
    return "\n\n".join(s.text for s in sources)


def learn(requests: list[tuple[Route, dict[str, Any]]]) -> dict[str, _Learned]:
    """Plan ``requests`` in order with a learning planner; what each template learned."""
    planner = Planner()
    found: dict[str, _Learned] = {}
    for i, (route, body) in enumerate(requests):
        plan = planner.plan(PlanRequest(route=route, body=body, now=float(i)))
        split = plan.learned
        if split is None or not split.changing:
            continue
        text = system_text(route, body)
        entry = found.setdefault(split.template, _Learned())
        entry.uses += 1
        entry.stretches = learned_stretches(text, split.stable)
        for a, b in split.conversation:
            entry.kept.extend(line for line in text[a:b].splitlines() if line.strip())
    return found


def keep_regex(line: str) -> str:
    """A ``keepInPlace`` rule for a per-conversation line: its label and the rest of the
    line (as the learner keeps a labelled unit), else exactly the line."""
    label, sep, _ = line[: LABEL_MAX + 2].partition(": ")
    if sep and label.strip():
        return re.escape(label.strip() + ": ") + r"[^\n]*"
    return re.escape(line.strip())


def suggest(
    requests: list[tuple[Route, dict[str, Any]]], name: str
) -> tuple[dict[str, Any], dict[str, str]]:
    """The suggested PromptPolicy spec (with ``exactFrom.file`` keys) and the static texts
    by key."""
    learned = sorted(learn(requests).items(), key=lambda kv: -kv[1].uses)
    blocks: list[dict[str, Any]] = []
    texts: dict[str, str] = {}
    keep: list[str] = []
    for tid, entry in learned:
        if len(blocks) + len(entry.stretches) > MAX_BLOCKS:
            continue
        for j, text in enumerate(entry.stretches):
            key = f"learned-{tid}-{j}"
            texts[f"{key}.txt"] = text
            blocks.append(
                {
                    "name": key,
                    "mode": "match",
                    "match": {"role": "system", "position": 0, "exactFrom": {"file": f"{key}.txt"}},
                }
            )
        for line in entry.kept:
            rule = keep_regex(line)
            if rule not in keep and len(keep) < MAX_KEEP:
                keep.append(rule)
    routes = {route for route, _ in requests}
    spec: dict[str, Any] = {
        "provider": "anthropic" if routes <= {"messages"} else "openai",
        "staticBlocks": blocks,
        "volatile": {"action": "relocate", "unmatchedSystem": "relocate"},
    }
    if keep:
        spec["volatile"]["keepInPlace"] = [
            {"name": f"kept_{n}", "regex": rule} for n, rule in enumerate(keep)
        ]
    return spec, texts


def _for_cluster(spec: dict[str, Any], config_map: str) -> dict[str, Any]:
    cluster: dict[str, Any] = json.loads(json.dumps(spec))
    for block in cluster["staticBlocks"]:
        key = block["match"]["exactFrom"]["file"]
        block["match"]["exactFrom"] = {"configMapKeyRef": {"name": config_map, "key": key}}
    return cluster


def write(spec: dict[str, Any], texts: dict[str, str], name: str, out: Path) -> list[Path]:
    """The three manifests and the text files; their paths."""
    out.mkdir(parents=True, exist_ok=True)
    config_map = f"{name}-static"[:63]
    written: list[Path] = []
    for key, text in texts.items():
        (out / key).write_text(text, "utf-8")
        written.append(out / key)
    documents = {
        f"{name}.local.yaml": {"kind": "PromptPolicy", "metadata": {"name": name}, "spec": spec},
        f"{name}.promptpolicy.yaml": {
            "apiVersion": "promptcache.io/v1alpha1",
            "kind": "PromptPolicy",
            "metadata": {"name": name},
            "spec": _for_cluster(spec, config_map),
        },
        f"{name}.configmap.yaml": {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": config_map},
            "data": texts,
        },
    }
    for file, document in documents.items():
        path = out / file
        path.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True), "utf-8")
        written.append(path)
    return written
