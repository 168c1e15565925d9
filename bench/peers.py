"""The gateways users would pick instead, as bench arms: LiteLLM's proxy and Portkey's gateway.

Each is installed by the bench itself, outside the project's environment, with the
ecosystem's own client: LiteLLM (``litellm[proxy]``, PyPI) into its own virtual
environment ``.venv-peers/litellm``, Portkey's gateway (``@portkey-ai/gateway``, npm)
into ``.venv-peers/portkey`` and run with the machine's Node. Versions are pinned so two
runs compare the same code; an install that fails (no Node, no registry) makes that arm
*unavailable* with the reason, and the bench goes on with the others.

Both are set up to do what the sidecar does with this request as far as they can:
LiteLLM's proxy injects the same two cache breakpoints the sidecar's planner places
(end of the system prompt, the last assistant turn) with ``cache_control_injection_points``;
Portkey's open-source gateway has no breakpoint injection and forwards the body. Each runs
as one process (LiteLLM: one worker), like the sidecar.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.payload import API_KEY

PEERS_DIR = Path(".venv-peers")
"""Where the peers are installed (ignored by git; reused by later runs)."""
LITELLM_REQUIREMENT = "litellm[proxy]==1.108.7"
PORTKEY_PACKAGE = "@portkey-ai/gateway@1.15.2"
INSTALL_TIMEOUT_S = 900.0
START_TIMEOUT_S = 180.0
"""LiteLLM's proxy takes ~30-60 s to start on a loaded 2-core machine."""
MODEL = "claude-sonnet-4-6"


class PeerUnavailableError(RuntimeError):
    """A peer could not be installed or started here; the message says why."""


@dataclass(frozen=True, slots=True)
class Peer:
    """One installed peer: how to start it and what each request must carry."""

    name: str
    version: str
    headers: dict[str, str] = field(default_factory=dict)
    """Extra request headers the peer needs (Portkey: provider and upstream host)."""


def _run(argv: list[str], *, cwd: Path | None = None) -> None:
    try:
        subprocess.run(
            argv,
            cwd=cwd,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=INSTALL_TIMEOUT_S,
        )
    except subprocess.CalledProcessError as exc:
        tail = (exc.stderr or b"").decode(errors="replace").strip().splitlines()[-3:]
        raise PeerUnavailableError(f"{' '.join(argv[:4])} failed: {' / '.join(tail)}") from exc
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PeerUnavailableError(f"{' '.join(argv[:4])} failed: {exc}") from exc


def litellm_python() -> Path:
    return PEERS_DIR / "litellm" / "bin" / "python"


def ensure_litellm() -> Peer:
    """LiteLLM's proxy in ``.venv-peers/litellm``, installed with pip when missing."""
    venv = PEERS_DIR / "litellm"
    python = litellm_python()
    if not (venv / "bin" / "litellm").exists() or _litellm_version(python) is None:
        _run([sys.executable, "-m", "venv", "--clear", str(venv)])
        _run([str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"])
        _run([str(python), "-m", "pip", "install", "--quiet", LITELLM_REQUIREMENT])
    version = _litellm_version(python)
    if version is None:
        raise PeerUnavailableError("litellm installed but not importable")
    return Peer(name="LiteLLM proxy", version=version)


def _litellm_version(python: Path) -> str | None:
    if not python.exists():
        return None
    out = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() or None


def portkey_script() -> Path:
    return PEERS_DIR / "portkey" / "node_modules" / "@portkey-ai" / "gateway" / "build"


def ensure_portkey(upstream: str) -> Peer:
    """Portkey's gateway in ``.venv-peers/portkey``, installed with npm when missing."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise PeerUnavailableError("Node.js and npm are not installed (Debian: nodejs npm)")
    folder = PEERS_DIR / "portkey"
    package = portkey_script().parent / "package.json"
    if not package.exists():
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / "package.json").exists():
            (folder / "package.json").write_text('{"name": "bench-peers", "private": true}\n')
        _run(["npm", "install", "--no-audit", "--no-fund", PORTKEY_PACKAGE], cwd=folder)
    try:
        version = str(json.loads(package.read_text())["version"])
    except (OSError, ValueError, KeyError) as exc:
        raise PeerUnavailableError(f"Portkey's package.json unreadable: {exc}") from exc
    return Peer(
        name="Portkey gateway",
        version=version,
        headers={"x-portkey-provider": "anthropic", "x-portkey-custom-host": upstream + "/v1"},
    )


LITELLM_CONFIG = """
model_list:
  - model_name: {model}
    litellm_params:
      model: anthropic/{model}
      api_base: {upstream}
      api_key: bench-upstream-key
      # The two breakpoints promptcache's planner places on the bench request.
      cache_control_injection_points:
        - location: message
          role: system
        - location: message
          index: -2
general_settings:
  master_key: {key}
"""


def _wait_port(port: int, process: subprocess.Popen[bytes], name: str) -> None:
    end = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < end:
        if process.poll() is not None:
            raise PeerUnavailableError(f"{name} exited during start-up ({process.returncode})")
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return
        except OSError:
            time.sleep(0.25)
    raise PeerUnavailableError(f"{name} did not listen within {START_TIMEOUT_S:.0f}s")


@contextlib.contextmanager
def _process(
    argv: list[str], port: int, name: str, *, env: dict[str, str], cwd: str
) -> Iterator[int]:
    log = Path(cwd) / "peer.log"
    with log.open("wb") as out:
        process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        try:
            try:
                _wait_port(port, process, name)
            except PeerUnavailableError as exc:
                tail = log.read_text(errors="replace").strip().splitlines()[-2:]
                raise PeerUnavailableError(f"{exc}: {' / '.join(tail)}") from exc
            yield process.pid
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=20)


def _clean_env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PROMPTCACHE_", "OTEL_", "LITELLM_", "VIRTUAL_ENV"))
    }


@contextlib.contextmanager
def litellm_running(port: int, upstream: str) -> Iterator[int]:
    """LiteLLM's proxy on ``port`` in front of ``upstream``; yields its pid."""
    with tempfile.TemporaryDirectory(prefix="bench-litellm-") as cwd:
        config = Path(cwd) / "config.yaml"
        config.write_text(LITELLM_CONFIG.format(model=MODEL, upstream=upstream, key=API_KEY))
        env = _clean_env() | {
            # The bundled price table, not a download at start-up (no network here).
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_LOG": "ERROR",
        }
        argv = [
            str((PEERS_DIR / "litellm" / "bin" / "litellm").absolute()),
            "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
            "--num_workers", "1",
        ]  # fmt: skip
        with _process(argv, port, "LiteLLM proxy", env=env, cwd=cwd) as pid:
            yield pid


@contextlib.contextmanager
def portkey_running(port: int) -> Iterator[int]:
    """Portkey's gateway on ``port`` (the upstream comes in each request's headers)."""
    script = (portkey_script() / "start-server.js").resolve()
    with tempfile.TemporaryDirectory(prefix="bench-portkey-") as cwd:
        argv = ["node", str(script), f"--port={port}", "--headless"]
        with _process(argv, port, "Portkey gateway", env=_clean_env(), cwd=cwd) as pid:
            yield pid
