"""Context variables: read from the app's request, filled into URL and header templates.

A variable comes from a request header (``x-promptcache-<name>`` unless the policy names
another) or from a field of the JSON body (a dotted path such as Anthropic's
``metadata.user_id`` or OpenAI's ``user``). URL placeholders are filled percent-encoded
as one path segment (``/`` too, and ``.``/``..`` can never climb the path), so a value
cannot reshape the URL; header placeholders are filled as they are, refusing CR/LF.
Values never reach logs: errors name the variable, not its value.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping
from urllib.parse import quote

from multidict import CIMultiDict, CIMultiDictProxy

from promptcache.policy.schema import ContextVariable
from sidecar.context.errors import SourceError

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
        else:
            value = headers.get(var.header_name) or None
        if value is not None:
            found[var.name] = value
    return found


def _fill(template: str, values: Mapping[str, str], *, url: bool) -> str:
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
        elif any(c in value for c in "\r\n\0"):
            raise SourceError("bad_variable")
        else:
            out.append(value)
    return "".join(out)


def render_url(template: str, values: Mapping[str, str]) -> str:
    """The URL with every ``{name}`` percent-encoded; already-encoded, ready to send."""
    return _fill(template, values, url=True)


def render_headers(templates: Mapping[str, str], values: Mapping[str, str]) -> dict[str, str]:
    """Header values with ``{name}`` filled raw; ``bad_variable`` on CR, LF or NUL."""
    return {name: _fill(value, values, url=False) for name, value in templates.items()}
