"""The ``promptcache`` command: one entry point that dispatches to each component.

Each component owns its subcommand in a module with ``configure(parser)`` and
``run(args) -> int``; it is imported only when its subcommand runs, so ``promptcache
sidecar`` never pays for the operator's imports and the core stays free of components.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Protocol

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "sidecar": ("promptcache.sidecar.cli", "run the caching proxy next to an app"),
    "operator": ("promptcache_operator.cli", "run the PromptPolicy operator and injection webhook"),
    "simulate": (
        "promptcache.simulator.cli",
        "run the local provider simulator (Anthropic + OpenAI)",
    ),
    "demo": (
        "promptcache.demo.cli",
        "run the case-study workload, before and after, and print the table",
    ),
    "policy": ("promptcache.sidecar.explain", "policy tools: 'promptcache policy check FILE'"),
    "explain": ("promptcache.sidecar.explain", "show how a policy rewrites a request"),
}


class _Command(Protocol):
    def configure(self, parser: argparse.ArgumentParser, command: str) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def _load(command: str) -> _Command:
    module: _Command = importlib.import_module(COMMANDS[command][0])
    return module


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="promptcache", description="LLM prompt caching without changing the application."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = argv[0] if argv and argv[0] in COMMANDS else None
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            _load(name).configure(p, name)
    args = parser.parse_args(argv)
    try:
        return _load(args.command).run(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
