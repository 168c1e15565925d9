"""``promptcache policy check FILE`` and ``promptcache explain --policy FILE REQUEST.json``.

Both exist so that an app team can see what the sidecar will do before it does it: the
first validates a policy and prints its static-token estimate and the breakpoints it
plans; the second runs the real planner on a request file and prints the rewritten
request with breakpoints and relocated spans marked, then the plan. A bad file gives one
line naming the field and the reason, and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from promptcache.models import lookup
from promptcache.policy import PolicyError, PolicySpec, load_policy_file
from promptcache.policy.schema import StaticBlock
from promptcache.sidecar.planner import ContextBlock, Plan, Planner, PlanRequest
from promptcache.sidecar.planner.types import describe_breakpoints
from promptcache.sidecar.planner.volatile import Detector
from promptcache.sidecar.suggest import SuggestError, read_requests, suggest, write
from promptcache.sidecar.templates_view import templates_report
from promptcache.tokens import estimate_json, estimate_text
from promptcache.wire import ROUTES, Route

_CONTEXT_NAME = re.compile(r'^<context name="([^"]+)">$', re.MULTILINE)
PREVIEW = 60
"""Characters of each text shown in the annotated view."""


class CliError(Exception):
    """A one-line reason to exit with code 2."""


def configure(parser: argparse.ArgumentParser, command: str) -> None:
    """Arguments of ``policy`` (with its ``check`` action) or ``explain``."""
    if command == "policy":
        sub = parser.add_subparsers(dest="policy_action", metavar="ACTION", required=True)
        check = sub.add_parser(
            "check", help="validate a policy; print its static-token estimate and breakpoints"
        )
        check.add_argument("file", metavar="FILE", help="policy file (YAML)")
        check.add_argument("--model", help="model whose minimum cacheable prefix applies")
        sug = sub.add_parser(
            "suggest",
            help="learn the templates of captured requests and write them as a PromptPolicy",
        )
        sug.add_argument("file", metavar="REQUESTS.jsonl", help="request bodies, one per line")
        sug.add_argument("--name", default="learned", help="policy name (default learned)")
        sug.add_argument("--out", default=".", metavar="DIR", help="output folder (default .)")
        sug.add_argument("--route", choices=["messages", "chat", "responses"])
        return
    parser.add_argument("--policy", metavar="FILE", help="policy file (omit: no-policy default)")
    parser.add_argument("request", metavar="REQUEST.json", nargs="?", help="a request body as JSON")
    parser.add_argument(
        "--templates",
        metavar="REQUESTS.jsonl",
        help="learn from captured request bodies (one per line) and print the templates "
        "by shape only (span kinds and lengths, ids, requests learned from; never text)",
    )
    parser.add_argument(
        "--route",
        choices=["messages", "chat", "responses"],
        help="API of the request (default: from its shape and the policy's provider)",
    )
    parser.add_argument(
        "--context",
        action="append",
        default=[],
        metavar="NAME=TEXT",
        help="fetched context to emit after the cached prefix (repeatable)",
    )
    parser.add_argument("--json", action="store_true", help="print only the rewritten request")


def run(args: argparse.Namespace) -> int:
    """Run the chosen command; 0 on success, 2 on a bad file."""
    try:
        if args.command == "policy" and args.policy_action == "suggest":
            _suggest(args)
        elif args.command == "policy":
            _check(args.file, args.model)
        elif args.templates:
            _templates(args)
        elif args.request:
            _explain(args)
        else:
            raise CliError("explain needs REQUEST.json or --templates REQUESTS.jsonl")
    except CliError as exc:
        sys.stderr.write(f"promptcache: error: {exc}\n")
        return 2
    return 0


def _suggest(args: argparse.Namespace) -> None:
    try:
        requests = list(read_requests(Path(args.file), args.route))
        spec, texts = suggest(requests, args.name)
    except SuggestError as exc:
        raise CliError(str(exc)) from None
    if not spec["staticBlocks"]:
        raise CliError(f"{args.file}: no template was learned (each needs two requests)")
    for path in write(spec, texts, args.name, Path(args.out)):
        _write(f"wrote {path}")


def _templates(args: argparse.Namespace) -> None:
    try:
        requests = list(read_requests(Path(args.templates), args.route))
    except SuggestError as exc:
        raise CliError(str(exc)) from None
    planner = Planner()
    for i, (route, body) in enumerate(requests):
        try:
            planner.plan(PlanRequest(route=route, body=body, now=float(i)))
        except Exception as exc:
            raise CliError(f"{args.templates}:{i + 1}: cannot plan: {type(exc).__name__}") from None
    report = templates_report(planner)
    if args.json:
        _write(json.dumps(report, indent=2))
        return
    _write(f"learned from {len(requests)} requests ({report['units']} anchors held)")
    for t in report["templates"]:
        spans = ", ".join(f"{s['kind']} {s['chars']:,}" for s in t["spans"])
        _write(
            f"  {t['id']} {t['state']:<9} {t['route']:<9} {t['model'] or '-'}: "
            f"{t['requests']} requests, version {t['version']}; spans (chars): {spans}"
        )


def _write(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def _load_policy(path: str) -> tuple[str, PolicySpec]:
    try:
        loaded = load_policy_file(path)
    except PolicyError as exc:
        raise CliError(str(exc).replace("\n", " ")) from None
    return loaded.name, loaded.spec


def _block_tokens(block: StaticBlock) -> int | None:
    if block.content is not None:
        return estimate_text(block.content)
    m = block.match
    text = (m.exact or m.prefix) if m is not None else None
    return estimate_text(text) if text is not None else None


def _block_text(block: StaticBlock) -> str | None:
    if block.content is not None:
        return block.content
    return block.match.exact or block.match.prefix if block.match is not None else None


def _describe_block(block: StaticBlock) -> str:
    if block.mode == "inject":
        return "inject (the sidecar puts it first)"
    m = block.match
    assert m is not None
    how = "exact" if m.exact else "prefix" if m.prefix else "sha256" if m.sha256 else "whole"
    return f"match {m.role}[{m.position}] {how}"


def _check(path: str, model: str | None) -> None:
    name, spec = _load_policy(path)
    info = lookup(spec.provider, model)
    minimum = spec.min_cacheable_tokens or info.min_cacheable_tokens
    _write(f"policy {name}: valid (provider {spec.provider}, mode {spec.mode})")
    detector = Detector(spec.volatile)
    total = 0
    unknown = False
    if spec.static_blocks:
        _write("static blocks:")
    for block in spec.static_blocks:
        tokens = _block_tokens(block)
        shown = f"~{tokens:,} tokens" if tokens is not None else "size known at run time"
        total += tokens or 0
        unknown = unknown or tokens is None
        _write(f"  {block.name:<20} {_describe_block(block):<36} {shown:<18} ttl {block.ttl}")
        text = _block_text(block)
        found = detector.find(text) if text is not None and detector.active else ()
        if found:
            kinds = ", ".join(sorted({s.detector for s in found}))
            _write(
                f"    warning: {len(found)} volatile-looking span(s) ({kinds}) in a static block"
            )
    verdict = "cacheable" if total >= minimum else "below the minimum: no system breakpoint"
    more = " + blocks sized at run time" if unknown else ""
    _write(
        f"static prefix: ~{total:,} tokens{more}; minimum cacheable "
        f"({model or 'default model'}): {minimum:,} tokens -> {verdict}"
    )
    _write("planned breakpoints:")
    if spec.provider != "anthropic":
        key = spec.prompt_cache_key or f"{name}-<static hash>"
        extra = (
            f"prompt_cache_key {key} when the client sets none"
            if spec.provider == "openai"
            else "no extra fields (openai-compatible server)"
        )
        _write(f"  none: {spec.provider} caches the stable prefix automatically; {extra}")
    else:
        bp = spec.breakpoints
        rows = []
        if bp.system:
            rows.append("system: end of the static system part")
        if bp.history:
            rows.append("history: end of the message before the newest user message (5m)")
        if bp.tools:
            rows.append("tools: after the last tool (when the request has tools)")
        for i, row in enumerate(rows, 1):
            _write(f"  {i}. {row}")
        _write("  each only when its prefix clears the minimum; at most 4 with the client's own")
    vol = spec.volatile
    detectors = ", ".join([*vol.detectors, *(p.name for p in vol.patterns)]) or "none"
    _write(f"volatile: {vol.action} ({detectors}); unmatched system text: {vol.unmatched_system}")
    if vol.keep_in_place:
        names = ", ".join(p.name for p in vol.keep_in_place)
        _write(f"  kept in place (same on every turn of a conversation): {names}")
    if spec.context_sources:
        names = ", ".join(s.name for s in spec.context_sources)
        _write(f"context sources: {names} (deadline {spec.context_deadline})")
    if spec.provider == "anthropic":
        _write(f"cache diagnostics: {_diagnostics_line(spec)}")


def _diagnostics_line(spec: PolicySpec | None) -> str:
    if spec is not None and spec.anthropic_diagnostics is False:
        return "off for this policy (anthropicDiagnostics: false)"
    return (
        "with the sidecar's --anthropic-diagnostics, each request carries "
        "diagnostics.previous_message_id (the response it continues) and the provider's "
        "cache_miss_reason is counted beside the sidecar's own diagnosis "
        "(promptcache_provider_cache_miss_reasons_total)"
    )


def _load_request(path: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"{path}: cannot read: {type(exc).__name__}") from None
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(
            f"{path}: not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    if not isinstance(body, dict):
        raise CliError(f"{path}: expected a JSON object (a request body)")
    return body


def _route(body: dict[str, Any], spec: PolicySpec | None, chosen: str | None) -> Route:
    for route in ROUTES.values():
        if chosen == route:
            return route
    if "input" in body or "instructions" in body:
        return "responses"
    if spec is not None:
        return "messages" if spec.provider == "anthropic" else "chat"
    msgs = body.get("messages")
    first = msgs[0] if isinstance(msgs, list) and msgs else None
    if isinstance(first, dict) and first.get("role") in ("system", "developer"):
        return "chat"
    return "messages"


def _contexts(items: list[str]) -> list[ContextBlock]:
    out = []
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise CliError(f"--context {item!r}: expected NAME=TEXT")
        out.append(ContextBlock(name, text))
    return out


def _explain(args: argparse.Namespace) -> None:
    name, spec = _load_policy(args.policy) if args.policy else ("none", None)
    body = _load_request(args.request)
    route = _route(body, spec, args.route)
    observe = spec is not None and spec.mode == "observe"
    if spec is not None and observe:
        spec = spec.model_copy(update={"mode": "enforce"})
    request = PlanRequest(
        route=route,
        body=body,
        policy_name=name if spec is not None else None,
        policy=spec,
        context=_contexts(args.context),
    )
    try:
        plan = Planner().plan(request)
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CliError(f"{args.request}: cannot plan: {reason}") from None
    if args.json:
        _write(json.dumps(plan.body, indent=2, ensure_ascii=False))
        return
    model = plan.model or "unknown model"
    _write(f"== rewritten request: route {route}, {model}, policy {name} ==")
    if observe:
        _write("(observe mode: the sidecar forwards the request unchanged; shown: enforce)")
    for line in annotate(plan.body, route, plan):
        _write(line)
    _write("== plan ==")
    for line in describe_plan(plan):
        _write(line)
    if route == "messages":
        if "diagnostics" in body:
            _write("cache diagnostics: the app sends its own diagnostics; left as sent")
        else:
            _write(f"cache diagnostics: {_diagnostics_line(spec)}")


def _preview(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = " ".join(text.split())
    return json.dumps(text[:PREVIEW] + ("..." if len(text) > PREVIEW else ""), ensure_ascii=False)


def _context_label(ctx: str) -> str:
    names = ", ".join(_CONTEXT_NAME.findall(ctx))
    return f"[context after the cached prefix: {names}]"


def _row(path: str, value: Any, block: Any, plan: Plan) -> str:
    tokens = estimate_json(value)
    text = value.get("text") if isinstance(value, dict) else value
    ctx = plan.context_text
    if ctx is not None and text == ctx:
        shown = _context_label(ctx)
    elif isinstance(value, str) and ctx and value.startswith(ctx):
        shown = f"{_context_label(ctx)} + {_preview(value[len(ctx) :])}"
    else:
        shown = _preview(text if isinstance(text, str) else value)
    mark = ""
    cc = block.get("cache_control") if isinstance(block, dict) else None
    if isinstance(cc, dict):
        mark = f"  <== breakpoint ({cc.get('ttl', '5m')})"
    return f"  {path:<28} ~{tokens:>6,} tok  {shown}{mark}"


def annotate(body: dict[str, Any], route: Route, plan: Plan) -> list[str]:
    """One line per tool, system block and message block of ``body``."""
    lines: list[str] = []
    for i, tool in enumerate(body.get("tools") or []):
        name = tool.get("name") if isinstance(tool, dict) else None
        lines.append(_row(f"tools[{i}] {name or ''}".strip(), tool, tool, plan))
    for key in ("system", "instructions"):
        value = body.get(key)
        if isinstance(value, str):
            lines.append(_row(key, value, None, plan))
        elif isinstance(value, list):
            lines.extend(_row(f"{key}[{i}]", b, b, plan) for i, b in enumerate(value))
    items = body.get("messages" if route != "responses" else "input")
    if isinstance(items, str):
        lines.append(_row("input", items, None, plan))
        items = []
    for i, msg in enumerate(items or []):
        role = msg.get("role", msg.get("type", "?")) if isinstance(msg, dict) else "?"
        content = msg.get("content") if isinstance(msg, dict) else None
        label = f"{'messages' if route != 'responses' else 'input'}[{i}] {role}"
        if isinstance(content, list):
            lines.append(f"  {label}")
            lines.extend(_row(f"  content[{j}]", b, b, plan) for j, b in enumerate(content))
        else:
            lines.append(_row(label, content if content is not None else msg, None, plan))
    if isinstance(body.get("cache_control"), dict):
        lines.append("  cache_control (top level)         automatic breakpoint on the last block")
    if "prompt_cache_key" in body:
        lines.append(f"  prompt_cache_key = {body['prompt_cache_key']}")
    return lines


def describe_plan(plan: Plan) -> list[str]:
    """The plan as ``field: value`` lines."""
    found = ", ".join(f"{k} {v}" for k, v in sorted(plan.volatile_found.items())) or "none"
    moved = ", ".join(f"{r.detector} {r.source}@{r.offset}+{r.length}" for r in plan.relocations)
    lines = [
        f"changed: {'yes' if plan.changed else 'no'}",
        f"static prefix: ~{plan.static_tokens:,} tokens, hash {(plan.static_hash or '-')[:16]}",
        f"expected cached tokens (warm cache): {plan.expected_cached_tokens:,}",
        f"breakpoints: {describe_breakpoints(plan.breakpoints)}",
        f"relocated: {moved or 'none'}",
        f"volatile spans found in the prefix: {found}",
    ]
    lines.extend(f"note: {n}" for n in plan.notes)
    return lines
