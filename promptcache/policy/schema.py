"""Pydantic models of the PromptPolicy spec.

This is the single source of truth: the sidecar validates its policy file with it, the
operator validates PromptPolicy objects with it, and the CRD's OpenAPI schema is
generated from it (``promptcache_operator.crd``). Field names are camelCase on the wire
(YAML, CRD) and snake_case in Python.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterator
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from promptcache.wire import PolicyTtl, Provider

DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

Duration = Annotated[str, Field(pattern=DURATION_PATTERN, examples=["500ms", "5m", "1h30m"])]
Role = Literal["system", "developer", "user", "assistant"]
Place = Literal["local", "cluster"]
"""Where a policy is read: a local file (texts from ``file``) or a PromptPolicy object in a
cluster (texts from ``configMapKeyRef``). Passed as the validation context ``{"place": ...}``;
without it both kinds validate (``promptcache policy check`` of a spec on its own)."""


def parse_duration(value: str) -> float:
    """Seconds in a Go-style duration such as ``500ms``, ``5m`` or ``1h30m``."""
    if not re.fullmatch(DURATION_PATTERN, value):
        raise ValueError(f"not a duration: {value!r} (use e.g. 500ms, 2s, 5m, 1h)")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(value))


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,  # field docstrings become CRD descriptions
    )


def _place(info: ValidationInfo) -> Place | None:
    context = info.context
    place = context.get("place") if isinstance(context, dict) else None
    if place == "local":
        return "local"
    if place == "cluster":
        return "cluster"
    return None


class ConfigMapKeyRef(_Model):
    """A key of a ConfigMap in the policy's namespace (resolved by the operator)."""

    name: str = Field(min_length=1, max_length=253)
    key: str = Field(min_length=1, max_length=253)


class ContentSource(_Model):
    """Where a block's text comes from when it is not inline."""

    config_map_key_ref: ConfigMapKeyRef | None = None
    """In a cluster: the operator reads this key and inlines it into the rendered policy."""
    file: str | None = None
    """Locally: a path, relative to the policy file's folder."""

    @field_validator("config_map_key_ref")
    @classmethod
    def _cluster_only(
        cls, ref: ConfigMapKeyRef | None, info: ValidationInfo
    ) -> ConfigMapKeyRef | None:
        if ref is not None and _place(info) == "local":
            raise ValueError(
                f"{ref.name}/{ref.key} is resolved by the operator; a local policy file "
                "needs the text inline or from a file"
            )
        return ref

    @field_validator("file")
    @classmethod
    def _local_only(cls, file: str | None, info: ValidationInfo) -> str | None:
        if file is not None and _place(info) == "cluster":
            raise ValueError("only in local policy files; use configMapKeyRef")
        return file

    @model_validator(mode="after")
    def _exactly_one(self) -> ContentSource:
        if (self.config_map_key_ref is None) == (self.file is None):
            raise ValueError("set exactly one of configMapKeyRef or file")
        return self


class Match(_Model):
    """How to recognise a static block the app sends itself (``mode: match``).

    All given criteria must hold. ``role`` and ``position`` pick the message (position
    counts messages of that role from 0; the Anthropic top-level ``system`` is role
    ``system`` position 0); ``exact``, ``prefix`` and ``sha256`` test its text.
    """

    role: Role = "system"
    position: int = Field(default=0, ge=0)
    exact: str | None = Field(default=None, min_length=1)
    """The block is this text, wherever it stands in the message."""
    exact_from: ContentSource | None = None
    """Like ``exact``, with the text from a ConfigMap key or a file."""
    prefix: str | None = Field(default=None, min_length=1)
    """The block is this text at the start of the message."""
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    """The block is the whole message, whose text must hash to this."""

    @model_validator(mode="after")
    def _one_text_test(self) -> Match:
        given = [x for x in (self.exact, self.exact_from, self.prefix, self.sha256) if x]
        if len(given) > 1:
            raise ValueError("use at most one of exact, exactFrom, prefix, sha256")
        return self


class StaticBlock(_Model):
    """A named, unchanging part of the prompt that belongs in the cached prefix."""

    name: str = Field(pattern=r"^[a-z0-9]([-_a-z0-9]*[a-z0-9])?$", max_length=63)
    mode: Literal["inject", "match"] = "inject"
    """``inject``: the sidecar puts the block first (the app no longer sends it);
    ``match``: the app sends it and ``match`` says how to recognise it."""
    ttl: PolicyTtl = "5m"
    """Cache lifetime: ``5m``, ``1h``, or ``auto`` (chosen from observed reuse)."""
    content: str | None = None
    """Inline text of the block (``inject`` mode)."""
    content_from: ContentSource | None = None
    """Text from a ConfigMap key (cluster) or a file (local), ``inject`` mode."""
    match: Match | None = None
    """How to find the block in the request (``match`` mode)."""

    @model_validator(mode="after")
    def _content_fits_mode(self) -> StaticBlock:
        if self.mode == "inject":
            if (self.content is None) == (self.content_from is None):
                raise ValueError("mode inject needs exactly one of content or contentFrom")
            if self.match is not None:
                raise ValueError("match is only for mode match")
        else:
            if self.match is None:
                raise ValueError("mode match needs match")
            if self.content is not None or self.content_from is not None:
                raise ValueError("mode match takes no content: the app sends the block")
        return self


class Breakpoints(_Model):
    """Which tiers get a cache breakpoint (Anthropic; at most 4 in total)."""

    tools: bool = True
    """After the last tool definition."""
    system: bool = True
    """After the static system part."""
    history: bool = True
    """After the stable conversation history (the turn before the newest user message)."""


class VolatilePattern(_Model):
    """A policy-defined detector of cache-busting text."""

    name: str = Field(pattern=r"^[a-z0-9_]+$", max_length=63)
    regex: str = Field(min_length=1)

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            compiled = re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regex: {exc}") from exc
        if compiled.match(""):
            raise ValueError("regex matches the empty string")
        return value


BuiltinDetector = Literal["datetime", "uuid", "hex_id", "numeric_id"]
ALL_DETECTORS: tuple[BuiltinDetector, ...] = ("datetime", "uuid", "hex_id", "numeric_id")


class VolatileSpec(_Model):
    """Cache-busting content in the static part: what to look for and what to do."""

    action: Literal["report", "relocate"] = "report"
    """``report`` counts what it finds; ``relocate`` moves it behind the cached prefix."""
    detectors: list[BuiltinDetector] = Field(default_factory=lambda: list(ALL_DETECTORS))
    patterns: list[VolatilePattern] = Field(default_factory=list)
    unmatched_system: Literal["keep", "relocate"] = "keep"
    """With static blocks in ``match`` mode: system text outside every block (retrieved
    documents, user metadata) stays in place (``keep``) or moves behind the cached
    conversation history (``relocate``), so that it stops breaking the prefix."""
    keep_in_place: list[VolatilePattern] = Field(default_factory=list, max_length=16)
    """With ``unmatchedSystem: relocate``: system text outside every static block that
    nevertheless stays where it is because it is the same on every turn of a conversation
    (a customer profile, account facts). What these regexes match stays in the system
    prompt right after the static blocks, inside the conversation's cached prefix; the
    rest moves behind the history. Text that changes within a conversation must not match:
    it would break the cached history of the turn where it changes."""

    @model_validator(mode="after")
    def _keep_needs_relocate(self) -> VolatileSpec:
        if self.keep_in_place and self.unmatched_system != "relocate":
            raise ValueError("keepInPlace applies only with unmatchedSystem: relocate")
        return self


MESSAGE_MAX_CHARS = 4096
"""A ``from: message`` variable holds at most this many characters of the message."""


class ContextVariable(_Model):
    """A value a context source's URL, headers or body may use as ``{name}``.

    From the request header ``x-promptcache-<name>`` (``from: header``, the default),
    from a request field (``from: field``, ``field`` a dotted path such as
    ``metadata.user_id`` or ``user``), or the text of the newest user message
    (``from: message``: its text parts joined, at most 4,096 characters; what a
    retrieval service searches with).
    """

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=63)
    from_: Literal["header", "field", "message"] = Field(default="header", alias="from")
    field: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")
    header: str | None = None
    """Header name for ``from: header``; default ``x-promptcache-<name>`` (dashes for _)."""

    @model_validator(mode="after")
    def _field_given(self) -> ContextVariable:
        if self.from_ == "field" and not self.field:
            raise ValueError("from: field needs field (e.g. metadata.user_id)")
        return self

    @property
    def header_name(self) -> str:
        return self.header or "x-promptcache-" + self.name.replace("_", "-")


def template_names(template: str) -> set[str]:
    """The ``{name}`` placeholders of a URL or header template."""
    names: set[str] = set()
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"bad template: {exc} (write a literal brace as {{{{ or }}}})") from exc
    for _, field, spec, conv in parts:
        if field is None:
            continue
        if not field.isidentifier() or spec or conv:
            raise ValueError(f"bad placeholder {{{field}}}: use plain {{name}}")
        names.add(field)
    return names


def body_strings(value: object) -> Iterator[str]:
    """Every string in a JSON-like ``value`` (keys excluded), depth first."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from body_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from body_strings(item)


_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
DEFAULT_CONTEXT_PLACEHOLDER = "[context unavailable: {reason}]"


def check_url_template(template: str) -> str:
    """Raise ``ValueError`` unless ``template`` is a usable context URL template.

    Placeholders may sit in the path and query only: a request-controlled value must
    never choose the scheme, host or port the sidecar connects to.
    """
    names = template_names(template)
    scheme, sep, rest = template.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        raise ValueError("bad URL template: must start with http:// or https://")
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if not authority or "{" in authority or "}" in authority:
        raise ValueError(
            "bad URL template: the host must be literal; put {placeholders} in the path or query"
        )
    if re.search(r"\s", template):
        raise ValueError("bad URL template: contains whitespace")
    sample = string.Formatter().vformat(template, (), dict.fromkeys(names, "x"))
    try:
        parsed = urlsplit(sample)
        _ = parsed.port
    except ValueError as exc:
        raise ValueError(f"bad URL template: {exc}") from exc
    if not parsed.hostname:
        raise ValueError("bad URL template: no host")
    return template


class ContextSource(_Model):
    """Per-request context the sidecar fetches, in parallel with the others.

    A failure has a reason (``missing_variable``, ``bad_variable``, ``timeout``,
    ``deadline``, ``unreachable``, ``status``, ``too_large``, ``not_text``, ``error``):
    a required source then fails the request; an optional one becomes ``placeholder``.
    """

    name: str = Field(pattern=r"^[a-z0-9_]+$", max_length=63)
    method: Literal["GET", "POST"] = "GET"
    url: str = Field(pattern=r"^https?://")
    """URL template; ``{var}`` placeholders (path and query only) are filled URL-encoded
    from ``contextVariables``."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Request headers; values may use ``{var}`` placeholders, filled as they are (a value
    holding CR or LF fails the source with ``bad_variable``)."""
    timeout: Duration = "1s"
    """Per attempt, including reading the answer; always cut short by ``contextDeadline``."""
    retries: int = Field(default=0, ge=0, le=5)
    """Extra attempts after a connection error, a timeout or a 5xx, within the deadline."""
    required: bool = False
    """Fail the request (provider-shaped error naming the source) when this fails."""
    max_bytes: int = Field(default=65536, ge=1, le=8 * 1024 * 1024)
    """A longer answer fails with ``too_large``; reading stops there."""
    cache_for: Duration | None = None
    """Memoise a successful result for this long, per rendered URL, method and headers."""
    placeholder: str = Field(default=DEFAULT_CONTEXT_PLACEHOLDER, max_length=256)
    """What the model reads when this optional source fails; ``{reason}`` becomes the
    failure reason. Empty: the block is left out."""
    body: dict[str, Any] | None = Field(
        default=None, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}
    )
    """JSON body of a POST, e.g. ``{query: "{question}", k: 3}``: ``{var}`` placeholders in
    its string values are filled as plain text and the body is sent as JSON, so a value
    can never change the body's structure."""

    @model_validator(mode="after")
    def _body_needs_post(self) -> ContextSource:
        if self.body is not None:
            if self.method != "POST":
                raise ValueError("body needs method: POST")
            for text in body_strings(self.body):
                template_names(text)
        return self

    @field_validator("url")
    @classmethod
    def _url_template(cls, value: str) -> str:
        return check_url_template(value)

    @field_validator("headers")
    @classmethod
    def _header_templates(cls, value: dict[str, str]) -> dict[str, str]:
        for name, template in value.items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"bad header name {name!r}")
            if any(c in template for c in "\r\n\0"):
                raise ValueError(f"header {name}: value contains CR, LF or NUL")
            template_names(template)
        return value


class PricingOverride(_Model):
    """Prices for this policy's model, replacing the shipped table (USD per million)."""

    input_per_mtok: float | None = Field(default=None, ge=0)
    output_per_mtok: float | None = Field(default=None, ge=0)
    write_5m_multiplier: float | None = Field(default=None, ge=0)
    write_1h_multiplier: float | None = Field(default=None, ge=0)
    read_multiplier: float | None = Field(default=None, ge=0)


class PolicySpec(_Model):
    """The ``spec`` of a PromptPolicy, and the sidecar's policy file."""

    provider: Provider = "anthropic"
    mode: Literal["enforce", "observe"] = "enforce"
    """``observe`` plans and measures but forwards requests unchanged."""
    min_cacheable_tokens: int | None = Field(default=None, ge=1)
    """Override of the model table's minimum cacheable prefix."""
    static_blocks: list[StaticBlock] = Field(default_factory=list, max_length=16)
    breakpoints: Breakpoints = Field(default_factory=Breakpoints)
    volatile: VolatileSpec = Field(default_factory=VolatileSpec)
    canonical_tool_order: bool = False
    """Sort tools by name, for apps that build tool lists in an unstable order."""
    prompt_cache_key: str | None = Field(default=None, max_length=64)
    """OpenAI ``prompt_cache_key``; default policy name + static hash."""
    context_sources: list[ContextSource] = Field(default_factory=list, max_length=16)
    context_variables: list[ContextVariable] = Field(default_factory=list, max_length=32)
    context_deadline: Duration = "2s"
    """Overall deadline for all context sources together."""
    pricing: PricingOverride | None = None
    anthropic_diagnostics: bool | None = None
    """Anthropic cache diagnostics chaining where the sidecar runs with
    ``--anthropic-diagnostics``: ``false`` opts this app out (the API keeps a fingerprint
    of each request that carries ``diagnostics``); unset follows the sidecar."""

    @model_validator(mode="after")
    def _consistent(self) -> PolicySpec:
        names = [b.name for b in self.static_blocks]
        if len(names) != len(set(names)):
            raise ValueError("staticBlocks names must be unique")
        src_names = [s.name for s in self.context_sources]
        if len(src_names) != len(set(src_names)):
            raise ValueError("contextSources names must be unique")
        known = {v.name for v in self.context_variables}
        for i, src in enumerate(self.context_sources):
            used = template_names(src.url)
            for value in src.headers.values():
                used |= template_names(value)
            for value in body_strings(src.body):
                used |= template_names(value)
            unknown = sorted(used - known)
            if unknown:
                raise ValueError(
                    f"contextSources[{i}] ({src.name}) uses unknown variable "
                    f"{{{unknown[0]}}}: declare it in contextVariables"
                )
            if parse_duration(src.timeout) <= 0:
                raise ValueError(f"contextSources[{i}] ({src.name}) timeout must be > 0")
        return self

    def block(self, name: str) -> StaticBlock:
        for b in self.static_blocks:
            if b.name == name:
                return b
        raise KeyError(name)
