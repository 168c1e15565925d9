"""``promptcache operator``: run the PromptPolicy operator and the injection webhook.

kopf runs embedded (``kopf.run`` with an explicit registry, settings and memo) rather
than through ``kopf run FILE``: the package is imported by its unique name
(``promptcache_operator``), nothing is put on ``sys.path`` and there is no import-time
registration. ``python -m promptcache_operator`` is the same command.

Two replicas: peering, with a random priority each
--------------------------------------------------
The chart runs two operator pods so that the webhook survives a pod restart. Both serve
admission requests: kopf runs its webhook server independently of peering, and the
injection path reads nothing from watches (namespace labels are looked up, not indexed).
Only one pod should reconcile, so the pods peer (``--peering <name>``, a
ClusterKopfPeering the chart creates). kopf's peering is not a leader election, though:
peers of *equal* priority all pause. So unless ``--priority`` is given, each process
draws a random priority at start: the highest one reconciles and the other stays
paused until the leader's keep-alive expires (``settings.peering.lifetime``, 60 s) or it
leaves cleanly (which it announces on shutdown). A missed reconciliation is not lost in
that window: the new leader re-lists everything when it resumes. ``--standalone``
(one replica, or tests) needs no peering CRD at all.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
from pathlib import Path

import kopf

from promptcache_operator.handlers import register
from promptcache_operator.runtime import MEMO_KEY, Runtime
from promptcache_operator.settings import ConfigError, OperatorOptions, load_injector_config

logger = logging.getLogger(__name__)

MAX_PRIORITY = 2**31 - 1


def configure(parser: argparse.ArgumentParser, command: str = "operator") -> None:
    """Add ``promptcache operator``'s flags to ``parser``."""
    env = os.environ.get
    parser.add_argument(
        "--injector-config",
        default=env("PROMPTCACHE_INJECTOR_CONFIG"),
        metavar="PATH",
        help="injector config YAML (the chart's ConfigMap); default: built-in defaults",
    )
    parser.add_argument(
        "--namespace",
        default=env("POD_NAMESPACE"),
        help="the operator's own namespace (never injected); default $POD_NAMESPACE",
    )
    hook = parser.add_argument_group("webhook")
    hook.add_argument("--webhook-port", type=int, default=9443)
    hook.add_argument("--webhook-addr", default="0.0.0.0", help="listen address")
    hook.add_argument(
        "--webhook-cert-dir",
        type=Path,
        default=None,
        help="directory with tls.crt, tls.key (and ca.crt); default: a self-signed certificate",
    )
    hook.add_argument("--webhook-host", default=None, help="host name kopf reports in its log")
    hook.add_argument(
        "--no-webhook", action="store_true", help="reconcile only, serve no admission requests"
    )
    hook.add_argument(
        "--admission-budget",
        type=float,
        default=4.0,
        metavar="SECONDS",
        help="answer each admission within this time, else let the pod through unmodified "
        "(keep it below the webhook's timeoutSeconds); default 4",
    )
    parser.add_argument(
        "--no-deployment-annotations",
        action="store_true",
        help="do not copy promptcache annotations from Deployments into pod templates "
        "(no Deployment watch, no patch rights needed)",
    )
    parser.add_argument(
        "--metrics-port", type=int, default=None, help="serve the operator's /metrics here"
    )
    parser.add_argument("--metrics-addr", default="0.0.0.0", help="metrics listen address")
    peer = parser.add_mutually_exclusive_group()
    peer.add_argument("--standalone", action="store_true", help="no peering (one replica)")
    peer.add_argument("--peering", metavar="NAME", help="ClusterKopfPeering to join")
    parser.add_argument(
        "--priority",
        type=int,
        default=None,
        help="peering priority; default: random, so that exactly one replica is active",
    )
    parser.add_argument("--liveness-port", type=int, default=None, help="serve /healthz here")
    parser.add_argument(
        "--log-level",
        default=env("PROMPTCACHE_LOG_LEVEL", "info"),
        choices=["debug", "info", "warning", "error"],
    )


def options_from_args(args: argparse.Namespace) -> OperatorOptions:
    """Validate the flags and the injector config; ``ConfigError`` on a bad one."""
    for flag, port in (
        ("--webhook-port", args.webhook_port),
        ("--metrics-port", args.metrics_port),
    ):
        if port is not None and not 1 <= port <= 65535:
            raise ConfigError(f"{flag} {port}: not a port")
    if not 0 < args.admission_budget <= 30:
        raise ConfigError(f"--admission-budget {args.admission_budget}: not in (0, 30] seconds")
    injector = load_injector_config(args.injector_config)
    liveness = (
        f"http://0.0.0.0:{args.liveness_port}/healthz" if args.liveness_port is not None else None
    )
    priority = args.priority
    if args.peering and priority is None:
        priority = 1 + secrets.randbelow(MAX_PRIORITY - 1)
    return OperatorOptions(
        injector=injector,
        own_namespace=args.namespace or None,
        webhook=not args.no_webhook,
        webhook_addr=args.webhook_addr,
        webhook_port=args.webhook_port,
        webhook_cert_dir=args.webhook_cert_dir,
        webhook_host=args.webhook_host,
        standalone=bool(args.standalone),
        peering_name=args.peering,
        priority=priority,
        liveness_endpoint=liveness,
        admission_budget=args.admission_budget,
        metrics_port=args.metrics_port,
        metrics_addr=args.metrics_addr,
        deployment_annotations=not args.no_deployment_annotations,
    )


def run(args: argparse.Namespace) -> int:
    """Run until SIGTERM/SIGINT; 2 for a bad configuration."""
    try:
        options = options_from_args(args)
    except ConfigError as exc:
        sys.stderr.write(f"promptcache operator: {exc}\n")
        return 2
    level = str(args.log_level)
    kopf.configure(debug=level == "debug", quiet=level in ("warning", "error"))
    if level == "error":
        logging.getLogger().setLevel(logging.ERROR)
    if level != "debug":  # one line per admission request is noise; kopf logs each call
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    registry = kopf.OperatorRegistry()
    register(
        registry, webhook=options.webhook, deployment_annotations=options.deployment_annotations
    )
    memo = kopf.Memo()
    memo[MEMO_KEY] = Runtime(options=options)
    logger.info(
        "promptcache operator starting: %s",
        "standalone"
        if options.standalone or not options.peering_name
        else f"peering {options.peering_name} (priority {options.priority})",
    )
    # kopf names this peer after $POD_ID; the chart sets POD_NAME (the downward API).
    if "POD_ID" not in os.environ and os.environ.get("POD_NAME"):
        os.environ["POD_ID"] = os.environ["POD_NAME"]
    try:
        kopf.run(
            registry=registry,
            memo=memo,
            clusterwide=True,
            standalone=options.standalone or not options.peering_name,
            peering_name=options.peering_name,
            priority=options.priority,
            liveness_endpoint=options.liveness_endpoint,
        )
    except Exception as exc:  # kopf has logged the details; say once why we stop
        sys.stderr.write(f"promptcache operator: stopped: {_reason(exc)}\n")
        return 1
    return 0


def _reason(exc: BaseException) -> str:
    """The innermost message of an exception chain, on one line."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:256]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m promptcache_operator")
    configure(parser, "operator")
    return run(parser.parse_args(argv))
