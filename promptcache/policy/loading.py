"""Reading a policy file: YAML in, a validated ``PolicySpec`` with contents resolved out.

Errors become one ``PolicyError`` whose message names the field and the reason on one
line, because that line ends up in a CLI, a log, a metric-labelled reload failure or a
PromptPolicy's status condition.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from promptcache.policy.schema import Place, PolicySpec
from promptcache.policy.sources import SourceRef, resolve


class PolicyError(ValueError):
    """A policy that cannot be used, with a one-line reason."""


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not str(part).startswith(("function-", "literal[")):
            out += ("." if out else "") + str(part)
    return out or "spec"


def describe_validation_error(exc: ValidationError) -> str:
    """The first error of a pydantic ``ValidationError`` as ``field: reason``."""
    errors = exc.errors()
    first = errors[0]
    msg = str(first["msg"]).removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{_loc(tuple(first['loc']))}: {msg}{more}"


def parse_policy(data: Any, *, place: Place | None = None) -> PolicySpec:
    """Validate a bare spec or a whole ``PromptPolicy`` object (its ``spec`` is used).

    ``place`` says where the policy is read, and so which text references it may hold
    (``file`` locally, ``configMapKeyRef`` in a cluster); ``None`` accepts both.
    """
    if isinstance(data, dict) and data.get("kind") == "PromptPolicy":
        data = data.get("spec") or {}
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PolicyError(f"spec: expected a mapping, got {type(data).__name__}")
    try:
        return PolicySpec.model_validate(data, context={"place": place})
    except ValidationError as exc:
        raise PolicyError(describe_validation_error(exc)) from exc


def resolve_files(spec: PolicySpec, base: Path) -> PolicySpec:
    """Inline the ``file`` texts of a local policy, read relative to ``base``."""

    def read(ref: SourceRef) -> str:
        name = ref.source.file
        if name is None:  # parse_policy(place="local") refused configMapKeyRef already
            raise PolicyError(f"{ref.where}.configMapKeyRef: resolved by the operator")
        try:
            return (base / name).read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PolicyError(
                f"{ref.where}.file: cannot read {name}: {type(exc).__name__}"
            ) from exc

    return resolve(spec, read)


@dataclass(frozen=True, slots=True)
class LoadedPolicy:
    """A validated policy and the name it is known by (the ``policy`` metric label)."""

    name: str
    spec: PolicySpec


def policy_name(data: Any, path: Path) -> str:
    """``metadata.name`` of a PromptPolicy object, else the file's stem."""
    if isinstance(data, dict):
        meta = data.get("metadata")
        if isinstance(meta, dict) and isinstance(meta.get("name"), str) and meta["name"]:
            return str(meta["name"])[:63]
    return path.stem[:63] or "policy"


def read_yaml_file(path: Path, *, error: Callable[[str], Exception] = PolicyError) -> Any:
    """The YAML document in ``path``, or ``error`` with a one-line reason: the path, why it
    could not be read, or the line of the syntax error (never the file's content)."""
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read: {type(exc).__name__}: {exc}") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise error(f"{path}: not valid YAML{where}") from exc


def load_policy_file(path: str | Path) -> LoadedPolicy:
    """Read, validate and resolve a policy file; raise ``PolicyError`` with one line."""
    p = Path(path)
    data = read_yaml_file(p)
    try:
        spec = resolve_files(parse_policy(data, place="local"), p.parent)
    except PolicyError as exc:
        raise PolicyError(f"{p}: {exc}") from exc
    return LoadedPolicy(name=policy_name(data, p), spec=spec)
