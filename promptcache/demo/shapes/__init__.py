"""The demo's app shapes: each a legacy app, its traffic and a hand-written policy.

``support`` is the case study's support agent (the default, the one the case study's
figures and targets are about). The others are shapes real apps have that the case
study does not: an agent with tools and a tool-use loop (``agent``), a RAG app that puts
retrieved documents into the user message (``rag``), and one deployment serving twenty
tenants with twenty system prompts (``tenants``). Each runs in the same three arms:
legacy (direct), zero-config (the sidecar with no policy) and the hand-written policy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from promptcache.demo.app import Outcome, Record, SupportAgent
from promptcache.demo.ceiling import Ceiling, ceiling
from promptcache.demo.shapes import agent, rag, tenants
from promptcache.demo.shapes.common import ChatApp, Sessions
from promptcache.demo.workload import POLICY_DIR, Workload, WorkloadConfig, generate, static_text
from promptcache.tokens import estimate_json, estimate_text


class AppClient(Protocol):
    """One app instance, as the runner drives it."""

    async def conversation(self, conv: Any, *, time_scale: float, record: Record) -> None: ...

    async def close(self) -> None: ...


class AppWorkload(Protocol):
    """A run's traffic, fixed by the seed."""

    @property
    def config(self) -> WorkloadConfig: ...

    @property
    def conversations(self) -> Sequence[Any]: ...

    @property
    def requests(self) -> int: ...

    def for_user(self, user: int) -> Sequence[Any]: ...


@dataclass(frozen=True, slots=True)
class AppShape:
    name: str
    title: str
    """One line for the report's heading."""
    policy: Path
    """The hand-written PromptPolicy the third arm runs with."""
    generate: Callable[[WorkloadConfig], AppWorkload]
    client: Callable[[str, WorkloadConfig, float], AppClient]
    """``client(base_url, config, timeout)``."""
    static_tokens: Callable[[], int]
    """Tokens of the part a policy would pin (for the one-line description)."""
    ceiling: Callable[[AppWorkload, Sequence[Outcome]], Ceiling | None]
    case_study: bool = False
    """Its figures compare with the case study's (the case study's targets apply)."""


def _support_client(base_url: str, config: WorkloadConfig, timeout: float) -> AppClient:
    return SupportAgent(
        base_url=base_url,
        model=config.model,
        max_tokens=config.max_tokens,
        docs_per_request=config.docs_per_request,
        timeout=timeout,
    )


def _support_ceiling(workload: AppWorkload, outcomes: Sequence[Outcome]) -> Ceiling | None:
    assert isinstance(workload, Workload)
    return ceiling(workload, outcomes)


def _chat(cls: type[ChatApp]) -> Callable[[str, WorkloadConfig, float], AppClient]:
    def make(base_url: str, config: WorkloadConfig, timeout: float) -> AppClient:
        return cls(base_url=base_url, config=config, timeout=timeout)

    return make


def _no_ceiling(workload: AppWorkload, outcomes: Sequence[Outcome]) -> Ceiling | None:
    return None


def _sessions(gen: Callable[[WorkloadConfig], Sessions]) -> Callable[[WorkloadConfig], AppWorkload]:
    return gen


SHAPES: dict[str, AppShape] = {
    s.name: s
    for s in (
        AppShape(
            "support",
            "the case study's support agent",
            POLICY_DIR / "support-agent.yaml",
            generate,
            _support_client,
            lambda: estimate_text(static_text()),
            _support_ceiling,
            case_study=True,
        ),
        AppShape(
            "agent",
            "an agent with tools and a tool-use loop",
            agent.POLICY,
            _sessions(agent.generate),
            _chat(agent.AgentApp),
            lambda: estimate_text(agent.static_text()) + estimate_json(agent.TOOLS),
            _no_ceiling,
        ),
        AppShape(
            "rag",
            "a RAG app with the retrieved documents in the user message",
            rag.POLICY,
            _sessions(rag.generate),
            _chat(rag.RagApp),
            lambda: estimate_text(rag.static_text()),
            _no_ceiling,
        ),
        AppShape(
            "tenants",
            f"a multi-tenant app, {tenants.TENANTS} tenants with their own system prompts",
            tenants.POLICY,
            _sessions(tenants.generate),
            _chat(tenants.TenantsApp),
            lambda: (
                sum(estimate_text(tenants.tenant_prompt(t)) for t in range(tenants.TENANTS))
                // tenants.TENANTS
            ),
            _no_ceiling,
        ),
    )
}
DEFAULT = "support"
