"""The case study's tables, the targets check and the cross-check, as text and Markdown.

One ``Comparison`` holds both arms, what the sidecar's ``/metrics`` and the simulator's
``/sim/stats`` counted, and renders the same rows for the terminal and for the report
file, next to the case study's own figures (``seed/case-study.md``).
"""

from __future__ import annotations

import math
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

HIT_RATE_TARGET = 0.85
INPUT_COST_TARGET = 0.35
P95_TARGET = 0.35


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
    time_scale: float
    backend: str
    workload: str
    """One line describing the workload (users, conversations, tokens)."""
    counted: list[Counted] = field(default_factory=list)
    """Token totals from the sidecar's metrics and the simulator's stats, per arm."""
    notes: list[str] = field(default_factory=list)
    ceiling: Ceiling | None = None
    """The most any cache could read on this workload (simulator runs only)."""

    def targets(self) -> list[Target]:
        pc, lg = self.promptcache, self.legacy
        ratio = pc.cost.input / lg.cost.input if lg.cost.input else math.inf
        gain = 1 - pc.p95 / lg.p95 if lg.p95 > 0 else 0.0
        return [
            Target(
                f"token cache hit rate >= {HIT_RATE_TARGET:.0%}",
                _pct(pc.tokens.hit_ratio) + self._ceiling_text(),
                pc.tokens.hit_ratio >= HIT_RATE_TARGET,
            ),
            Target(
                f"input cost per request <= {INPUT_COST_TARGET:.0%} of legacy",
                f"{ratio:.1%}",
                ratio <= INPUT_COST_TARGET,
            ),
            Target(
                f"P95 latency improved >= {P95_TARGET:.0%}",
                f"{gain:.1%}" + self._p95_ceiling_text(),
                gain >= P95_TARGET,
            ),
            Target(
                "zero failures (both arms)",
                f"{lg.failures} + {pc.failures}",
                lg.failures == 0 and pc.failures == 0,
            ),
        ]

    def _ceiling_text(self) -> str:
        c = self.ceiling
        if c is None:
            return ""
        return (
            f" (this workload's ceiling: {_pct(c.documents_behind)} with the retrieved"
            f" documents behind the history, {_pct(c.any_cache)} for any cache at all)"
        )

    def _p95_ceiling_text(self) -> str:
        floor, before = self.promptcache.p95_floor, self.legacy.p95
        if math.isnan(floor) or before <= 0:
            return ""
        return (
            f" (at most {1 - floor / before:.1%} for any cache in this run: the answers"
            f" alone stream for a P95 of {floor * 1000:,.0f} ms after the fastest first token)"
        )

    def arm(self, name: str) -> ArmSummary:
        return self.legacy if name == "legacy" else self.promptcache

    def consistent(self) -> bool:
        """Every other count of an arm's tokens equals the app's own."""
        return all(agrees(c.tokens, self.arm(c.arm).tokens) for c in self.counted)

    def rows(self) -> list[tuple[str, str, str, str, str]]:
        lg, pc = self.legacy, self.promptcache

        def ms(v: float) -> str:
            return "n/a" if math.isnan(v) else f"{v * 1000:,.0f} ms"

        def usd(v: float) -> str:
            return f"${v:.4f}"

        return [
            ("Median latency", ms(lg.median), ms(pc.median), _chg(lg.median, pc.median), "median"),
            ("P95 latency", ms(lg.p95), ms(pc.p95), _chg(lg.p95, pc.p95), "p95"),
            ("Average latency", ms(lg.average), ms(pc.average),
             _chg(lg.average, pc.average), "average"),
            ("Time to first token, median", ms(lg.ttft_median), ms(pc.ttft_median),
             _chg(lg.ttft_median, pc.ttft_median), "ttft_median"),
            ("Time to first token, P95", ms(lg.ttft_p95), ms(pc.ttft_p95),
             _chg(lg.ttft_p95, pc.ttft_p95), "ttft_p95"),
            ("Token cache hit rate", _pct(lg.tokens.hit_ratio), _pct(pc.tokens.hit_ratio), "",
             "hit_rate"),
            ("Input cost / request", usd(lg.cost.input), usd(pc.cost.input),
             _chg(lg.cost.input, pc.cost.input), "cost_input"),
            ("Output cost / request", usd(lg.cost.output), usd(pc.cost.output),
             _chg(lg.cost.output, pc.cost.output), "cost_output"),
            ("Total cost / request", usd(lg.cost.total), usd(pc.cost.total),
             _chg(lg.cost.total, pc.cost.total), "cost_total"),
            ("Requests per second", f"{lg.rps:.2f}", f"{pc.rps:.2f}", _chg(lg.rps, pc.rps), "rps"),
            ("Failures", f"{lg.failures} of {lg.requests}", f"{pc.failures} of {pc.requests}", "",
             "failures"),
        ]  # fmt: skip

    def text(self) -> str:
        """The terminal rendering."""
        out = [f"{self.backend}: {self.workload}", ""]
        rows = [(r[0], r[1], r[2], r[3], CASE_STUDY[r[4]]) for r in self.rows()]
        head = ("", "legacy", "promptcache", "change", "case study")
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(5)]
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
        for name in ("legacy", "promptcache"):
            own = self.arm(name).tokens
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
        lg, pc = self.legacy, self.promptcache
        out = [
            "# promptcache demo: the case study's support agent, before and after",
            "",
            f"Backend: **{self.backend}**. Workload: {self.workload}.",
            "",
            "Latencies are in the provider's time: wall-clock seconds divided by the time "
            f"scale ({self.time_scale:g}). The app, the sidecar and the simulator's own CPU "
            "time is scaled the same way, which only counts against the promptcache arm.",
            "",
            "| Metric | legacy | promptcache | change | case study |",
            "| :--- | ---: | ---: | ---: | :--- |",
        ]
        for r in self.rows():
            out.append(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {CASE_STUDY[r[4]]} |")
        out += ["", "## Targets", "", "| Target | value | result |", "| :--- | ---: | :---: |"]
        for t in self.targets():
            out.append(f"| {t.name} | {t.value} | {'PASS' if t.passed else 'FAIL'} |")
        out += ["", "## Cost per request by token kind", ""]
        out += ["| kind | legacy | promptcache |", "| :--- | ---: | ---: |"]
        for label, a, b in (
            ("uncached input", lg.cost.uncached, pc.cost.uncached),
            ("cache read", lg.cost.cache_read, pc.cost.cache_read),
            ("cache write", lg.cost.cache_write, pc.cost.cache_write),
            ("output", lg.cost.output, pc.cost.output),
        ):
            out.append(f"| {label} | ${a:.5f} | ${b:.5f} |")
        out += ["", "## Usage per request", ""]
        out += ["| | legacy | promptcache |", "| :--- | ---: | ---: |"]
        out.append(
            f"| input (all kinds) | {lg.input_tokens_per_request:,.0f} | "
            f"{pc.input_tokens_per_request:,.0f} |"
        )
        out.append(
            f"| of which retrieved documents | {lg.retrieved_tokens_per_request:,.0f} | "
            f"{pc.retrieved_tokens_per_request:,.0f} |"
        )
        out += ["", "## Cross-check", "", "```", *self.crosscheck_lines(), "```", ""]
        out += [f"- {n}" for n in self.notes]
        out += ["", *[f"![{p}]({p})" for p in plots], ""]
        return "\n".join(out)


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
        latency_plot(comparison.legacy, comparison.promptcache, out_dir / "latency.png"),
        cost_plot(comparison.legacy, comparison.promptcache, out_dir / "cost.png"),
    ]
    path = out_dir / "report.md"
    path.write_text(comparison.markdown(plots=[p.name for p in plots]), "utf-8")
    return path
