"""``promptcache sidecar``: flags and environment in, two listeners up until SIGTERM.

Flags override ``PROMPTCACHE_<NAME>`` variables, which override the defaults in
``sidecar.config``. The proxy listens on ``--listen`` (the app's loopback), the admin
app on ``--admin-listen``. On SIGTERM the listeners close and in-flight calls get
``shutdown_grace`` seconds to finish (a native sidecar is stopped after the app, so
normally nothing is in flight by then).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys

from aiohttp import web
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from pydantic import ValidationError

from promptcache.contract import sidecar_flag
from promptcache.policy import describe_validation_error
from promptcache.sidecar.admin import create_admin_app
from promptcache.sidecar.app import build_state, create_app
from promptcache.sidecar.config import SidecarSettings, split_host_port
from promptcache.sidecar.memory import HeapTrimmer
from promptcache.telemetry import setup_tracing

log = logging.getLogger("promptcache.sidecar")

_FLAGS = {
    "listen": ("HOST:PORT", "where the app's LLM calls arrive (default 127.0.0.1:8787)"),
    "admin_listen": ("HOST:PORT", "/metrics, /healthz, /readyz (default 0.0.0.0:9787)"),
    "policy": ("PATH", "PromptPolicy YAML file, reloaded on change (default: none)"),
    "anthropic_upstream": ("URL", "Anthropic API base (default https://api.anthropic.com)"),
    "openai_upstream": ("URL", "OpenAI(-compatible) API base (default https://api.openai.com)"),
    "anthropic_diagnostics": (
        "{true,false}",
        "chain Anthropic cache diagnostics (diagnostics.previous_message_id; default false)",
    ),
    "mode": (
        "{apply,observe}",
        "observe: learn and report, send requests unchanged (default apply)",
    ),
}

SERVICE_NAME = "promptcache-sidecar"
GC_THRESHOLD = (20_000, 20, 50)
"""Young-generation threshold raised from CPython's 700: parsing one 28 KB request makes
a few thousand containers, so the default collects on nearly every call; request
objects die by reference counting, not by the cycle collector."""


def configure(parser: argparse.ArgumentParser, command: str) -> None:
    """Add the sidecar's flags (each also ``PROMPTCACHE_<NAME>``)."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "more settings, environment only:\n" + "\n".join(
        f"  PROMPTCACHE_{name.upper()} (default {field.default})"
        for name, field in SidecarSettings.model_fields.items()
        if name not in _FLAGS
    )
    for name, (metavar, help_text) in _FLAGS.items():
        env = "PROMPTCACHE_" + name.upper()
        switch = SidecarSettings.model_fields[name].annotation is bool
        parser.add_argument(
            sidecar_flag(name),
            dest=name,
            metavar=metavar,
            default=None,
            # A switch also works bare (``--anthropic-diagnostics`` means true).
            nargs="?" if switch else None,
            const="true" if switch else None,
            help=f"{help_text}; env {env}",
        )


def settings_from(args: argparse.Namespace) -> SidecarSettings:
    """Settings with flags over environment over defaults."""
    given = {name: getattr(args, name) for name in _FLAGS if getattr(args, name, None)}
    return SidecarSettings(**given)


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from(args)
    except ValidationError as exc:
        sys.stderr.write(f"promptcache sidecar: {describe_validation_error(exc)}\n")
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(serve(settings))
    except OSError as exc:  # a port in use, an address not available
        log.error("cannot start: %s", exc)
        return 1
    return 0


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    # Process metrics (RSS, CPU, open fds) answer "what does the sidecar cost the pod".
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def _tune_gc() -> None:
    """Freeze start-up objects out of the cycle collector's scans; collect less often.

    Imports leave ~10^5 long-lived objects (pydantic, OpenTelemetry, aiohttp) that every
    full collection would scan again, stalling in-flight calls; ``gc.freeze`` moves them
    to a permanent generation.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


async def serve(settings: SidecarSettings, *, ready: asyncio.Event | None = None) -> None:
    """Run both listeners until SIGTERM or SIGINT."""
    tracer_provider = setup_tracing(SERVICE_NAME)
    state = build_state(settings, registry=_registry(), tracer_provider=tracer_provider)
    runner = web.AppRunner(
        create_app(state, tracer_provider=tracer_provider),
        access_log=None,
        handle_signals=False,
        shutdown_timeout=settings.shutdown_grace,
    )
    admin = web.AppRunner(create_admin_app(state), access_log=None, handle_signals=False)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await runner.setup()
    await admin.setup()
    _tune_gc()
    trimmer = HeapTrimmer(settings.heap_trim_interval)
    trimmer.start()
    try:
        host, port = split_host_port(settings.listen)
        await web.TCPSite(runner, host, port, backlog=1024).start()
        admin_host, admin_port = split_host_port(settings.admin_listen)
        await web.TCPSite(admin, admin_host, admin_port).start()
        log.info("proxy on %s, admin on %s", settings.listen, settings.admin_listen)
        if ready is not None:
            ready.set()
        await stop.wait()
        log.info("stopping: in-flight calls get %gs", settings.shutdown_grace)
    finally:
        trimmer.stop()
        await admin.cleanup()
        await runner.cleanup()
        if tracer_provider is not None:
            tracer_provider.shutdown()
