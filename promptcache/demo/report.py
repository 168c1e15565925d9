"""The demo's tables, the targets check and the cross-check, as text and Markdown.

One ``Comparison`` holds the three arms (legacy, zero-config, policy), what the sidecars'
``/metrics`` and the simulators' ``/sim/stats`` counted, and renders the same rows for
the terminal and for the report file, next to the case study's own figures for the case
study's app. The targets depend on what ran: the case study's (restated from what the
workload allows: a share of the computed ceilings), the zero-config ones for the other
app shapes, and on a real server the shares of its prefix cache.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from promptcache.demo.ceiling import Ceiling
from promptcache.demo.summary import ArmSummary, agrees
from promptcache.usage import Usage

# The case study's figures (before -> after), for the side-by-side column.
CASE_STUDY: dict[str, str] = {
    "median": "12,000 -> 9,700 ms (-19.2%)",
    "p95": "23,000 -> 15,000 ms (-34.8%)",
    "average": "13,509 -> 10,507 ms (-22.2%)",
    "ttft_median": "not reported",
    "ttft_p95": "not reported",
    "hit_rate": "68.7%",
    "cost_input": "$0.0216 -> $0.0083 (38%)",
    "cost_output": "not reported",
    "cost_total": "-61% (case study's claim)",
    "rps": "+29% at 75 users",
    "failures": "0",
}

CASE_STUDY_HIT_RATE = 0.687
CEILING_SHARE_TARGET = 0.98
"""The policy arm's hit rate, as a share of the ceiling for the placement it uses."""
INPUT_COST_TARGET = 0.33
"""The policy arm's input cost per request, as a share of legacy's."""
P95_SHARE_TARGET = 0.80
"""The policy arm's P95 improvement, as a share of what any cache could reach in the run."""
CASE_STUDY_P95 = 0.348
RPS_TARGET = 0.29
"""Throughput gain over legacy (the case study's +29% at 75 users)."""
ZERO_CONFIG_HIT_SHARE = 0.95
"""Zero-config's hit rate as a share of the hand-written policy's (case-study app)."""
ZERO_CONFIG_COST_SHARE = 1.05
"""Zero-config's input cost per request as a share of the policy's (case-study app)."""
SHAPE_HIT_SHARE = 0.90
"""Zero-config's hit rate as a share of the policy's (the other app shapes)."""
REAL_REACHABLE_SHARE = 0.80
"""On a real server: the policy arm's cache share as a share of the reachable one."""


@dataclass(frozen=True, slots=True)
class Counted:
    """Token totals some other component counted, for the cross-check."""

    source: str
    arm: str
    """``legacy`` or ``promptcache``: whose app-side totals these must equal."""
    tokens: Usage


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    value: str
    passed: bool


@dataclass(slots=True)
class Comparison:
    """Everything the report shows."""

    legacy: ArmSummary
    promptcache: ArmSummary
    """The hand-written policy's arm."""
    zero_config: ArmSummary
    """The sidecar with no policy at all."""
    time_scale: float
    backend: str
    workload: str
    """One line describing the workload (users, conversations, tokens)."""
    app: str = "support"
    case_study: bool = True
    """The case study's app: its figures and targets apply."""
    counted: list[Counted] = field(default_factory=list)
    """Token totals from the sidecars' metrics and the simulators' stats, per arm."""
    notes: list[str] = field(default_factory=list)
    ceiling: Ceiling | None = None
    """The most any cache could read on this workload (simulator runs only)."""
    reachable: float | None = None
    """Real-server runs: the share of prompt text a prefix cache with the server's one
    slot could have reused (estimated from characters); None on the simulator."""

    @property
    def arms(self) -> tuple[ArmSummary, ArmSummary, ArmSummary]:
        return (self.legacy, self.zero_config, self.promptcache)

    def targets(self) -> list[Target]:
        if self.reachable is not None:
            return self._real_targets()
        if not self.case_study:
            return self._shape_targets()
        pc, lg = self.promptcache, self.legacy
        out = []
        hit = pc.tokens.hit_ratio
        c = self.ceiling
        if c is not None and c.documents_behind > 0:
            share = hit / c.documents_behind
            out.append(
                Target(
                    f"token cache hit rate >= {CEILING_SHARE_TARGET:.0%} of the ceiling for "
                    f"the policy's placement, and above the case study's "
                    f"{_pct(CASE_STUDY_HIT_RATE)}",
                    f"{_pct(hit)} = {share:.1%} of {_pct(c.documents_behind)} (retrieved "
                    f"documents behind the history; {_pct(c.any_cache)} for any cache at all)",
                    share >= CEILING_SHARE_TARGET and hit > CASE_STUDY_HIT_RATE,
                )
            )
        ratio = _ratio(pc.cost.input, lg.cost.input)
        out.append(
            Target(
                f"input cost per request <= {INPUT_COST_TARGET:.0%} of legacy",
                f"{ratio:.1%}",
                ratio <= INPUT_COST_TARGET,
            )
        )
        gain = 1 - pc.p95 / lg.p95 if lg.p95 > 0 else 0.0
        floor = pc.p95_floor
        reach = 1 - floor / lg.p95 if lg.p95 > 0 and not math.isnan(floor) else math.nan
        got = gain / reach if reach > 0 else math.nan
        out.append(
            Target(
                f"P95 latency improvement >= {P95_SHARE_TARGET:.0%} of what any cache could "
                "reach in this run",
                f"{gain:.1%} of at most {reach:.1%} ({_share(got)}; the answers alone stream for a "
                f"P95 of {floor * 1000:,.0f} ms after the fastest first token); case study "
                f"{CASE_STUDY_P95:.1%}, for reference",
                not math.isnan(got) and got >= P95_SHARE_TARGET,
            )
        )
        rps = pc.rps / lg.rps - 1 if lg.rps > 0 else math.nan
        out.append(
            Target(
                f"requests per second >= +{RPS_TARGET:.0%} over legacy (case study: "
                f"+29% at 75 users; this run {self._users()} users)",
                f"{rps:+.1%}",
                not math.isnan(rps) and rps >= RPS_TARGET,
            )
        )
        out.append(self._failures())
        out += self._zero_config_targets(ZERO_CONFIG_HIT_SHARE, cost_share=ZERO_CONFIG_COST_SHARE)
        return out

    def _users(self) -> str:
        words = self.workload.split(" concurrent users", 1)[0].rsplit(" ", 1)
        return words[-1] if len(words) > 0 else "?"

    def _failures(self) -> Target:
        counts = [a.failures for a in self.arms]
        return Target(
            "zero failures (all three arms)",
            " + ".join(str(n) for n in counts),
            not any(counts),
        )

    def _zero_config_targets(self, hit_share: float, *, cost_share: float | None) -> list[Target]:
        zc, pc, lg = self.zero_config, self.promptcache, self.legacy
        got = _ratio(zc.tokens.hit_ratio, pc.tokens.hit_ratio)
        out = [
            Target(
                f"zero-config token hit rate >= {hit_share:.0%} of the hand-written policy's",
                f"{_pct(zc.tokens.hit_ratio)} vs {_pct(pc.tokens.hit_ratio)} ({got:.1%})",
                got >= hit_share,
            )
        ]
        if cost_share is not None:
            cost = _ratio(zc.cost.input, pc.cost.input)
            out.append(
                Target(
                    f"zero-config input cost per request <= {cost_share:.0%} of the policy's",
                    f"${zc.cost.input:.4f} vs ${pc.cost.input:.4f} ({cost:.1%})",
                    cost <= cost_share,
                )
            )
        direct = _ratio(zc.cost.input, lg.cost.input)
        out.append(
            Target(
                "zero-config never costs more than direct: input cost per request <= legacy's",
                f"${zc.cost.input:.4f} vs ${lg.cost.input:.4f} ({direct:.1%})",
                direct <= 1.0,
            )
        )
        return out

    def _shape_targets(self) -> list[Target]:
        return [
            *self._zero_config_targets(SHAPE_HIT_SHARE, cost_share=None),
            self._failures(),
        ]

    def _real_targets(self) -> list[Target]:
        lg, zc, pc = (a.tokens.hit_ratio for a in self.arms)
        reach = self.reachable or 0.0
        got = pc / reach if reach > 0 else math.nan
        zgot = zc / reach if reach > 0 else math.nan
        return [
            Target(
                "with the policy, a larger share of prompt tokens read from the server's "
                "cache than the legacy app's",
                f"{_pct(pc)} vs legacy {_pct(lg)}",
                pc > lg,
            ),
            Target(
                f"with the policy, >= {REAL_REACHABLE_SHARE:.0%} of the share a one-slot "
                "prefix cache could reuse",
                f"{_pct(pc)} of ~{_pct(reach)} ({_share(got)})",
                not math.isnan(got) and got >= REAL_REACHABLE_SHARE,
            ),
            Target(
                "zero-config (no policy): a larger share read from cache than the legacy app's",
                f"{_pct(zc)} vs legacy {_pct(lg)} (~{_share(zgot)} of the reachable share)",
                zc > lg,
            ),
            self._failures(),
        ]

    def arm(self, name: str) -> ArmSummary:
        return {"legacy": self.legacy, "zero-config": self.zero_config}.get(name, self.promptcache)

    def consistent(self) -> bool:
        """Every other count of an arm's tokens equals the app's own."""
        return all(agrees(c.tokens, self.arm(c.arm).tokens) for c in self.counted)

    def rows(self) -> list[tuple[str, ...]]:
        """Metric, legacy, zero-config, its change, policy, its change, case-study key."""
        lg, zc, pc = self.arms

        def ms(v: float) -> str:
            return "n/a" if math.isnan(v) else f"{v * 1000:,.0f} ms"

        def usd(v: float) -> str:
            return f"${v:.4f}"

        def row(
            label: str,
            key: str,
            get: Callable[[ArmSummary], float],
            fmt: Callable[[float], str],
            change: bool = True,
        ) -> tuple[str, ...]:
            a, b, c = (get(x) for x in (lg, zc, pc))
            return (
                label,
                fmt(a),
                fmt(b),
                _chg(a, b) if change else "",
                fmt(c),
                _chg(a, c) if change else "",
                key,
            )

        def hit(x: ArmSummary) -> float:
            return x.tokens.hit_ratio

        return [
            row("Median latency", "median", lambda x: x.median, ms),
            row("P95 latency", "p95", lambda x: x.p95, ms),
            row("Average latency", "average", lambda x: x.average, ms),
            row("Time to first token, median", "ttft_median", lambda x: x.ttft_median, ms),
            row("Time to first token, P95", "ttft_p95", lambda x: x.ttft_p95, ms),
            row("Token cache hit rate", "hit_rate", hit, _pct, change=False),
            row("Input cost / request", "cost_input", lambda x: x.cost.input, usd),
            row("Output cost / request", "cost_output", lambda x: x.cost.output, usd),
            row("Total cost / request", "cost_total", lambda x: x.cost.total, usd),
            row("Requests per second", "rps", lambda x: x.rps, lambda v: f"{v:.2f}"),
            ("Failures", f"{lg.failures} of {lg.requests}", f"{zc.failures} of {zc.requests}",
             "", f"{pc.failures} of {pc.requests}", "", "failures"),
        ]  # fmt: skip

    def _head(self) -> tuple[str, ...]:
        head = ("", "legacy", "zero-config", "change", "policy", "change")
        return (*head, "case study") if self.case_study else head

    def _cells(self, r: tuple[str, ...]) -> tuple[str, ...]:
        return (*r[:6], CASE_STUDY[r[6]]) if self.case_study else r[:6]

    def text(self) -> str:
        """The terminal rendering."""
        out = [f"{self.backend}: {self.workload}", ""]
        rows = [self._cells(r) for r in self.rows()]
        head = self._head()
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        for r in [head, *rows]:
            out.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        out += ["", "Targets"]
        for t in self.targets():
            out.append(f"  {'PASS' if t.passed else 'FAIL'}  {t.name}: {t.value}")
        out += ["", *self.crosscheck_lines()]
        out += [f"  {n}" for n in self.notes]
        return "\n".join(out)

    def crosscheck_lines(self) -> list[str]:
        lines = ["Cross-check: token hit rate (read / all input) as each component counted it"]
        for arm in self.arms:
            name, own = arm.name, arm.tokens
            lines.append(
                f"  {name:<11} app (usage received)  {_pct(own.hit_ratio, 2):>7}  {_kinds(own)}"
            )
            for c in (c for c in self.counted if c.arm == name):
                same = "equal" if agrees(c.tokens, own) else "DIFFERENT"
                lines.append(
                    f"  {name:<11} {c.source:<21} {_pct(c.tokens.hit_ratio, 2):>7}  "
                    f"{_kinds(c.tokens)}  {same}"
                )
        return lines

    def markdown(self, *, plots: list[str]) -> str:
        arms = self.arms
        names = " | ".join(a.name for a in arms)
        head = self._head()
        out = [
            f"# promptcache demo: {self.app}, before and after",
            "",
            f"Backend: **{self.backend}**. Workload: {self.workload}.",
            "",
            "Arms: **legacy** (the app straight to the provider), **zero-config** (the same "
            "app through a sidecar with no policy at all), **policy** (through a sidecar with "
            "the app's hand-written PromptPolicy). Each change is against legacy.",
            "",
            "Latencies are in the provider's time: wall-clock seconds divided by the time "
            f"scale ({self.time_scale:g}). The app, the sidecar and the simulator's own CPU "
            "time is scaled the same way, which only counts against the sidecar's arms.",
            "",
            "| " + " | ".join(head[1:]).join(("Metric | ", " |")),
            "| :--- | "
            + " | ".join("---:" for _ in head[1:6])
            + (" | :--- |" if self.case_study else " |"),
        ]
        for r in self.rows():
            out.append("| " + " | ".join(self._cells(r)) + " |")
        out += ["", "## Targets", "", "| Target | value | result |", "| :--- | ---: | :---: |"]
        for t in self.targets():
            out.append(f"| {t.name} | {t.value} | {'PASS' if t.passed else 'FAIL'} |")
        out += ["", "## Cost per request by token kind", ""]
        out += [f"| kind | {names} |", "| :--- | ---: | ---: | ---: |"]
        for label, attr in (
            ("uncached input", "uncached"),
            ("cache read", "cache_read"),
            ("cache write", "cache_write"),
            ("output", "output"),
        ):
            cells = " | ".join(f"${getattr(a.cost, attr):.5f}" for a in arms)
            out.append(f"| {label} | {cells} |")
        out += ["", "## Usage per request", ""]
        out += [f"| | {names} |", "| :--- | ---: | ---: | ---: |"]
        cells = " | ".join(f"{a.input_tokens_per_request:,.0f}" for a in arms)
        out.append(f"| input (all kinds) | {cells} |")
        cells = " | ".join(f"{a.retrieved_tokens_per_request:,.0f}" for a in arms)
        out.append(f"| of which retrieved documents | {cells} |")
        out += ["", "## Cross-check", "", "```", *self.crosscheck_lines(), "```", ""]
        out += [f"- {n}" for n in self.notes]
        out += ["", *[f"![{p}]({p})" for p in plots], ""]
        return "\n".join(out)


def _share(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:.0%}"


def _ratio(a: float, b: float) -> float:
    if b > 0:
        return a / b
    return 1.0 if a == b else math.inf


def _pct(v: float, digits: int = 1) -> str:
    return f"{v * 100:.{digits}f}%"


def _chg(before: float, after: float) -> str:
    if math.isnan(before) or math.isnan(after) or before == 0:
        return ""
    return f"{(after - before) / before * 100:+.1f}%"


def _kinds(t: Usage) -> str:
    return (
        f"(read {t.cache_read:,}, write {t.cache_write:,}, "
        f"uncached {t.uncached:,}, output {t.output:,})"
    )


def write(comparison: Comparison, out_dir: Path) -> Path:
    """Write ``report.md`` and the plots into ``out_dir``; return the Markdown path."""
    from promptcache.demo.plots import cost_plot, latency_plot

    out_dir.mkdir(parents=True, exist_ok=True)
    plots = [
        latency_plot(comparison.arms, out_dir / "latency.png"),
        cost_plot(comparison.arms, out_dir / "cost.png"),
    ]
    path = out_dir / "report.md"
    path.write_text(comparison.markdown(plots=[p.name for p in plots]), "utf-8")
    return path
