"""Driving ``wrk`` (Debian's package): a C load generator, so the client is never the limit."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bench.payload import API_KEY

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}
_PERCENTILE = re.compile(r"^\s*(50|75|90|99)%\s+([0-9.]+)(us|ms|s|m)\s*$", re.M)
_RPS = re.compile(r"^Requests/sec:\s+([0-9.]+)", re.M)
_ERRORS = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)|Socket errors:.*", re.M)

SCRIPT = """
wrk.method = "POST"
local f = assert(io.open("{body}", "rb"))
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["anthropic-version"] = "2023-06-01"
wrk.headers["x-api-key"] = "{key}"
{extra}
"""


@dataclass(frozen=True, slots=True)
class Result:
    """Latency percentiles in seconds and throughput of one wrk run."""

    p50: float
    p90: float
    p99: float
    rps: float
    errors: str | None


def available() -> bool:
    return shutil.which("wrk") is not None


def version() -> str:
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    return (out.stdout + out.stderr).strip().splitlines()[0] if available() else "not installed"


def run(
    url: str,
    body: bytes,
    *,
    connections: int,
    seconds: float,
    stream: bool,
    headers: Mapping[str, str] | None = None,
) -> Result:
    """POST ``body`` to ``url`` over ``connections`` keep-alive connections."""
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        body_path = Path(tmp) / "body.json"
        body_path.write_bytes(body)
        script = Path(tmp) / "post.lua"
        lines = [f'wrk.headers["{k}"] = "{v}"' for k, v in (headers or {}).items()]
        if stream:
            lines.append('wrk.headers["x-bench-stream"] = "1"')
        script.write_text(SCRIPT.format(body=body_path, key=API_KEY, extra="\n".join(lines)))
        threads = 1 if connections < 4 else 2
        out = subprocess.run(
            [
                "wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s",
                "--latency", "--timeout", "10s", "-s", str(script), url,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout  # fmt: skip
    pct = {int(p): float(v) * _UNITS[u] for p, v, u in _PERCENTILE.findall(out)}
    rps = _RPS.search(out)
    errors = _ERRORS.search(out)
    if not pct or rps is None:
        raise RuntimeError(f"cannot read wrk output:\n{out}")
    return Result(
        p50=pct[50],
        p90=pct[90],
        p99=pct[99],
        rps=float(rps.group(1)),
        errors=errors.group(0) if errors else None,
    )
