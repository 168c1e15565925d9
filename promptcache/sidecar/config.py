"""The sidecar's settings: every knob with its default, its unit and why.

Settings come from (highest first) command-line flags, ``PROMPTCACHE_<NAME>`` environment
variables, then the defaults below; the operator's injection sets the environment, a
developer on a laptop uses flags. Defaults follow the providers' own clients (the official
SDKs wait up to 600 s for a response) so the sidecar never gives up before the app would.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from yarl import URL

from promptcache.contract import (
    DEFAULT_ADMIN_LISTEN,
    DEFAULT_LISTEN,
    DEFAULT_MODE,
    ENV_PREFIX,
    Mode,
)

MIB = 1024 * 1024


class SidecarSettings(BaseSettings):
    """Configuration of one sidecar process."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    listen: str = DEFAULT_LISTEN
    """``host:port`` the app's LLM calls arrive on; loopback only, the app is in the pod."""
    admin_listen: str = DEFAULT_ADMIN_LISTEN
    """``host:port`` of ``/metrics``, ``/healthz``, ``/readyz`` (scraped from outside the pod)."""
    policy: Path | None = None
    """The PromptPolicy file (YAML), reloaded when it changes; none means pass-through."""
    anthropic_upstream: str = "https://api.anthropic.com"
    """Where Anthropic requests go (``/v1/messages`` is appended as the app sent it)."""
    openai_upstream: str = "https://api.openai.com"
    """Where OpenAI and OpenAI-compatible requests go (the app's path, e.g. ``/v1/...``)."""

    max_body_bytes: int = Field(default=32 * MIB, ge=1024)
    """Largest request body accepted on the proxied routes, bytes (Anthropic's own limit)."""
    client_body_timeout: float = Field(default=60.0, gt=0)
    """Seconds allowed for the app to send its whole request body before a 408."""
    upstream_connect_timeout: float = Field(default=10.0, gt=0)
    """Seconds to open a TCP/TLS connection to the upstream."""
    upstream_headers_timeout: float = Field(default=600.0, gt=0)
    """Seconds from sending a request to the upstream's response headers before a 504
    (non-streamed answers arrive whole: the SDKs wait 600 s for them too)."""
    upstream_read_timeout: float = Field(default=600.0, gt=0)
    """Seconds of silence allowed between two chunks of an upstream response body."""
    upstream_max_connections: int = Field(default=256, ge=1)
    """Pooled connections per upstream; long-lived streams each hold one."""
    upstream_keepalive: float = Field(default=30.0, ge=0)
    """Seconds an idle pooled upstream connection is kept."""

    retry_max_attempts: int = Field(default=3, ge=1, le=10)
    """Attempts per request, the first included, before the upstream's answer is relayed.
    A client that retries by itself (the official SDKs) gets statuses at once instead:
    its attempts are not multiplied."""
    retry_budget: float = Field(default=30.0, ge=0)
    """Total seconds a request may spend waiting between attempts."""
    retry_after_max: float = Field(default=20.0, ge=0)
    """Cap on an upstream's ``retry-after``, seconds; a longer ask is relayed to the app."""
    retry_backoff: float = Field(default=0.5, ge=0)
    """First backoff without ``retry-after``, seconds; doubles each attempt, full jitter."""

    mode: Mode = DEFAULT_MODE
    """``observe``: learn templates and report what would change, but send every request
    as the app sent it (byte-identical). A policy that sets its own ``mode`` wins."""
    learning: bool = True
    """``false``: learn no templates; without a policy the whole system prompt is the
    static prefix (the never-worse guard still withdraws markers that do not pay)."""

    anthropic_diagnostics: bool = False
    """Chain Anthropic cache diagnostics: add ``diagnostics.previous_message_id`` (the
    response the request continues) so the API says why a cache read missed. Off by
    default: the API then keeps a fingerprint (hashes, token counts) of each request."""
    planner_enabled: bool = True
    """``false``: forward every body as the app sent it, without planning (a kill switch;
    usage, cost and latency are still measured)."""
    policy_poll_interval: float = Field(default=1.0, gt=0)
    """Seconds between checks of the policy file (also catches ConfigMap symlink swaps)."""
    heap_trim_interval: float = Field(default=30.0, ge=0)
    """Seconds between returns of the C heap's free pages to the system (glibc's
    ``malloc_trim``; see ``sidecar.memory``); 0: never."""
    shutdown_grace: float = Field(default=25.0, ge=0)
    """Seconds in-flight requests may finish after SIGTERM."""
    log_level: str = "INFO"
    """Python logging level name."""

    @field_validator("anthropic_upstream", "openai_upstream")
    @classmethod
    def _http_url(cls, value: str) -> str:
        url = URL(value)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"not an http(s) URL: {value!r}")
        return value.rstrip("/")

    @field_validator("listen", "admin_listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        split_host_port(value)
        return value


def split_host_port(value: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) as a tuple; ``ValueError`` if malformed."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected host:port, got {value!r}")
    host = host.removeprefix("[").removesuffix("]")
    return host or "0.0.0.0", int(port)
