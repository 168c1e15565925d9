"""Context variables: read from the app's request, filled into URL, header and body templates.

A variable comes from a request header (``x-promptcache-<name>`` unless the policy names
another), from a field of the JSON body (a dotted path such as Anthropic's
``metadata.user_id`` or OpenAI's ``user``) or from the newest user message's text (what
a retrieval service searches with). URL placeholders are filled percent-encoded
as one path segment (``/`` too, and ``.``/``..`` can never climb the path), so a value
cannot reshape the URL; header placeholders are filled as they are, refusing CR/LF; body
placeholders are filled into JSON strings before the body is serialised.
Values never reach logs: errors name the variable, not its value.
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

from multidict import CIMultiDict, CIMultiDictProxy

from promptcache.policy.schema import MESSAGE_MAX_CHARS, ContextVariable
from promptcache.sidecar.context.errors import SourceError
from promptcache.sidecar.planner import turns

_LITERAL_SAFE = "/:?#[]@!$&'()*+,;=%~-._"
"""Characters a URL template's literal text keeps as written (it is already a URL)."""


def field_value(body: object, path: str) -> str | None:
    """The scalar at dotted ``path`` in a parsed JSON body, as text; None when absent.

    Digit segments index lists. Objects, lists, ``null`` and empty strings count as
    absent: they would make a meaningless URL.
    """
    node: object = body
    for part in path.split("."):
        if isinstance(node, Mapping):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    if isinstance(node, bool):
        return "true" if node else "false"
    if isinstance(node, int | float):
        return str(node)
    if isinstance(node, str) and node:
        return node
    return None


def newest_user_text(body: object) -> str | None:
    """The text of the newest user message of a Messages, Chat Completions or Responses
    body (text parts joined by blank lines; images and tool results left out), cut to
    ``MESSAGE_MAX_CHARS``; None when there is none (``planner.turns`` defines it)."""
    return turns.newest_user_text(body, MESSAGE_MAX_CHARS)


def resolve_variables(
    variables: Iterable[ContextVariable], *, headers: Mapping[str, str], body: object
) -> dict[str, str]:
    """The declared variables present in this request, by name (absent ones left out)."""
    if not isinstance(headers, CIMultiDict | CIMultiDictProxy):
        headers = CIMultiDict(headers)
    found: dict[str, str] = {}
    for var in variables:
        if var.from_ == "field":
            value = field_value(body, var.field or "")
        elif var.from_ == "message":
            value = newest_user_text(body)
        else:
            value = headers.get(var.header_name) or None
        if value is not None:
            found[var.name] = value
    return found


def _fill(template: str, values: Mapping[str, str], *, url: bool, raw: bool = False) -> str:
    out: list[str] = []
    for literal, name, _, _ in string.Formatter().parse(template):
        out.append(quote(literal, safe=_LITERAL_SAFE) if url else literal)
        if name is None:
            continue
        value = values.get(name)
        if value is None:
            raise SourceError("missing_variable")
        if url:
            out.append("%2E" * len(value) if value in (".", "..") else quote(value, safe=""))
        elif not raw and any(c in value for c in "\r\n\0"):
            raise SourceError("bad_variable")
        else:
            out.append(value)
    return "".join(out)


def _fill_json(template: Any, values: Mapping[str, str]) -> Any:
    if isinstance(template, str):
        return _fill(template, values, url=False, raw=True)
    if isinstance(template, dict):
        return {key: _fill_json(item, values) for key, item in template.items()}
    if isinstance(template, list):
        return [_fill_json(item, values) for item in template]
    return template


def render_body(template: Mapping[str, Any], values: Mapping[str, str]) -> bytes:
    """The JSON body with ``{name}`` filled into its strings; serialised after filling,
    so a value is always one JSON string and never reshapes the body."""
    # ASCII with \u escapes: any text, lone surrogates included, is a valid JSON body.
    return json.dumps(_fill_json(dict(template), values)).encode("ascii")


def render_url(template: str, values: Mapping[str, str]) -> str:
    """The URL with every ``{name}`` percent-encoded; already-encoded, ready to send."""
    return _fill(template, values, url=True)


def render_headers(templates: Mapping[str, str], values: Mapping[str, str]) -> CIMultiDict[str]:
    """Header values with ``{name}`` filled raw; ``bad_variable`` on CR, LF or NUL.
    Case-insensitive, as HTTP header names are."""
    return CIMultiDict((name, _fill(value, values, url=False)) for name, value in templates.items())
