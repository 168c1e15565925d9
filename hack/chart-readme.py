#!/usr/bin/env python3
"""Generate the chart's README.md and values.schema.json from the comments in values.yaml.

Why: values.yaml is the chart's specification (cert-manager's convention). Writing the
same facts again in a README table and a JSON schema by hand lets the three drift; this
script derives both from the one file, and a unit test runs it with ``--check``.

Conventions in values.yaml:

* the comment lines directly above ``key:`` describe that key (a blank line ends a
  comment block); every value must have one, or generation fails;
* a ``# @schema {...}`` line adds JSON-schema keywords to that key's inferred schema; if
  it contains ``"type"``, it replaces the inferred schema (use it for free-form maps and
  lists, whose nested keys then need no comments).

Inference: a non-empty mapping becomes a strict object (``additionalProperties: false``),
an empty one a free-form object, a list an array, scalars their JSON type.

The ``injector`` section is the exception: what the operator accepts there is defined
once, by its pydantic model (``promptcache_operator.settings.InjectorConfig``), so its
validation keywords come from that model's JSON schema (``injector_json_schema``), not
from ``@schema`` lines; values.yaml still gives each key's comment and default, and the
two must name the same keys (the chart-only ``image`` object aside).

Usage: ``hack/chart-readme.py [--check] [CHART_DIR]`` (default ``charts/promptcache``).
With ``--check`` nothing is written; the exit status is 1 when a file is stale.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from promptcache_operator.settings import CHART_ONLY_INJECTOR_KEYS, injector_json_schema

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CHART = REPO_ROOT / "charts" / "promptcache"

_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][A-Za-z0-9_.-]*):(?:\s|$)")
_SCHEMA_TAG = "@schema "

Path_ = tuple[str, ...]


class SpecError(ValueError):
    """values.yaml breaks one of the conventions above."""


@dataclass
class KeyDoc:
    """What the comment block above one key says."""

    description: str = ""
    schema: dict[str, Any] = field(default_factory=dict)


def parse_comments(text: str) -> dict[Path_, KeyDoc]:
    """Map each key path of a block-style YAML file to the comment block above it."""
    docs: dict[Path_, KeyDoc] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            pending = []
            continue
        if stripped.startswith("#"):
            pending.append(stripped[1:].strip())
            continue
        match = _KEY_LINE.match(line)
        if match is None:  # a list item or a continuation: never documented on its own
            pending = []
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match["key"]))
        path = tuple(key for _, key in stack)
        docs[path] = _key_doc(pending, path, lineno)
        pending = []
    return docs


def _key_doc(lines: list[str], path: Path_, lineno: int) -> KeyDoc:
    doc = KeyDoc()
    words: list[str] = []
    for line in lines:
        if line.startswith(_SCHEMA_TAG):
            try:
                extra = json.loads(line[len(_SCHEMA_TAG) :])
            except json.JSONDecodeError as exc:
                raise SpecError(
                    f"line {lineno - 1}: bad @schema JSON for {'.'.join(path)}: {exc}"
                ) from exc
            if not isinstance(extra, dict):
                raise SpecError(f"@schema for {'.'.join(path)} must be a JSON object")
            doc.schema.update(extra)
        else:
            words.append(line)
    doc.description = " ".join(w for w in words if w)
    return doc


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    if isinstance(value, list):
        return "array"
    return "object"


@dataclass(frozen=True)
class Row:
    """One README table row: a documented value."""

    key: str
    type: str
    default: object
    description: str


def build(values: dict[str, Any], docs: dict[Path_, KeyDoc]) -> tuple[dict[str, Any], list[Row]]:
    """The values schema and the README rows for ``values``."""
    rows: list[Row] = []
    models = {"injector": injector_json_schema()}
    properties = {
        key: _schema_for((key,), value, docs, rows, model=models.get(key))
        for key, value in values.items()
    }
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "Values of the promptcache chart",
        "description": "Generated from values.yaml by hack/chart-readme.py; do not edit.",
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
    }
    return schema, rows


_MODEL_KEYWORDS = {
    "type", "enum", "pattern", "minimum", "maximum", "minLength", "maxLength", "items",
    "additionalProperties", "propertyNames", "uniqueItems", "anyOf",
}  # fmt: skip


def _model_keywords(model: dict[str, Any]) -> dict[str, Any]:
    """The validation keywords of a pydantic schema node; ``anyOf [X, null]`` -> ``type:
    [X, null]`` with X's keywords (the same meaning, and a README type name)."""
    out = {k: v for k, v in model.items() if k in _MODEL_KEYWORDS}
    options = out.get("anyOf")
    if isinstance(options, list) and len(options) == 2 and {"type": "null"} in options:
        (other,) = [o for o in options if o != {"type": "null"}]
        del out["anyOf"]
        out.update(_model_keywords(other))
        out["type"] = [other["type"], "null"]
    return out


def _schema_for(
    path: Path_,
    value: object,
    docs: dict[Path_, KeyDoc],
    rows: list[Row],
    *,
    model: dict[str, Any] | None = None,
) -> dict[str, Any]:
    dotted = ".".join(path)
    doc = docs.get(path)
    if doc is None or not doc.description:
        raise SpecError(f"values.yaml: {dotted} has no comment; every value needs one")
    if model is not None:
        return _schema_from_model(path, value, docs, rows, doc, model)
    if "type" in doc.schema:  # explicit: replaces inference, children are free-form
        schema = {"description": doc.description, **doc.schema, "default": value}
        rows.append(Row(dotted, _type_name(schema), value, doc.description))
        return schema
    kind = _json_type(value)
    schema = {"description": doc.description, "type": kind}
    if isinstance(value, dict) and value:
        schema["additionalProperties"] = False
        schema["properties"] = {
            key: _schema_for((*path, key), child, docs, rows) for key, child in value.items()
        }
        schema.update(doc.schema)
        return schema  # a section: its leaves get the rows
    if isinstance(value, list):
        item_types = {_json_type(v) for v in value}
        if len(item_types) == 1 and item_types != {"object", "array"}:
            schema["items"] = {"type": item_types.pop()}
    schema.update(doc.schema)
    schema["default"] = value
    rows.append(Row(dotted, _type_name(schema), value, doc.description))
    return schema


def _schema_from_model(
    path: Path_,
    value: object,
    docs: dict[Path_, KeyDoc],
    rows: list[Row],
    doc: KeyDoc,
    model: dict[str, Any],
) -> dict[str, Any]:
    """A value whose schema is the operator's model (see the module docstring)."""
    dotted = ".".join(path)
    if doc.schema:
        raise SpecError(
            f"values.yaml: {dotted} takes its schema from the operator's InjectorConfig; "
            "drop its @schema line"
        )
    fields = model.get("properties")
    if isinstance(value, dict) and isinstance(fields, dict):
        chart_only = CHART_ONLY_INJECTOR_KEYS if path == ("injector",) else frozenset()
        missing = sorted(set(fields) - set(value) - chart_only)
        extra = sorted(set(value) - set(fields) - chart_only)
        if missing or extra:
            raise SpecError(
                f"values.yaml: {dotted} and the operator's InjectorConfig disagree: "
                f"missing {missing}, unknown to the operator {extra}"
            )
        properties = {}
        for key, child in value.items():
            if key in chart_only:
                properties[key] = _schema_for((*path, key), child, docs, rows)
            else:
                properties[key] = _schema_for((*path, key), child, docs, rows, model=fields[key])
        return {
            "description": doc.description,
            "type": "object",
            "additionalProperties": False,
            "properties": properties,
        }
    schema = {"description": doc.description, **_model_keywords(model), "default": value}
    rows.append(Row(dotted, _type_name(schema), value, doc.description))
    return schema


def _type_name(schema: dict[str, Any]) -> str:
    kind = schema.get("type", "any")
    if isinstance(kind, list):
        return " or ".join(str(k) for k in kind)
    if kind == "array" and isinstance(schema.get("items"), dict) and "type" in schema["items"]:
        return f"array of {schema['items']['type']}"
    if "enum" in schema:
        return " \\| ".join(json.dumps(v) for v in schema["enum"])
    return str(kind)


README_HEAD = """\
# promptcache Helm chart

<!-- Generated from values.yaml by hack/chart-readme.py; edit values.yaml, then run
     `.venv/bin/python hack/chart-readme.py`. A unit test fails when this file is stale. -->

{description}

```
helm install promptcache charts/promptcache -n promptcache-system --create-namespace
```

Install, upgrade, uninstall and how the webhook certificates work:
[docs/install.md](../../docs/install.md). Impossible value combinations (for example two
standalone operators, or a PodDisruptionBudget that could never be satisfied) fail the
render with a message that says what to change; `values.schema.json` rejects unknown
keys and out-of-range values.

## Values
"""


def render_readme(chart: dict[str, Any], rows: list[Row], docs: dict[Path_, KeyDoc]) -> str:
    """The README text: one table per top-level section."""
    out = [README_HEAD.format(description=" ".join(str(chart["description"]).split()))]
    general = [row for row in rows if "." not in row.key]
    if general:
        out.append("\n### General\n")
        out.append("| Key | Type | Default | Description |")
        out.append("|---|---|---|---|")
        out.extend(_row(row) for row in general)
    section: str | None = None
    for row in (row for row in rows if "." in row.key):
        top = row.key.split(".", 1)[0]
        if top != section:
            section = top
            out.append(f"\n### `{top}`\n\n{docs[(top,)].description}\n")
            out.append("| Key | Type | Default | Description |")
            out.append("|---|---|---|---|")
        out.append(_row(row))
    return "\n".join(out) + "\n"


def _row(row: Row) -> str:
    default = json.dumps(row.default).replace("|", "\\|")
    description = row.description.replace("|", "\\|")
    return f"| `{row.key}` | {row.type} | `{default}` | {description} |"


def generate(chart_dir: Path) -> dict[Path, str]:
    """File path -> the content it should have."""
    text = (chart_dir / "values.yaml").read_text("utf-8")
    values = yaml.safe_load(text) or {}
    chart = yaml.safe_load((chart_dir / "Chart.yaml").read_text("utf-8"))
    docs = parse_comments(text)
    schema, rows = build(values, docs)
    return {
        chart_dir / "values.schema.json": json.dumps(schema, indent=2) + "\n",
        chart_dir / "README.md": render_readme(chart, rows, docs),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chart", nargs="?", type=Path, default=DEFAULT_CHART)
    parser.add_argument("--check", action="store_true", help="only report stale files")
    args = parser.parse_args(argv)
    try:
        files = generate(args.chart)
    except SpecError as exc:
        sys.stderr.write(f"chart-readme: {exc}\n")
        return 2
    stale = [p for p, content in files.items() if not p.exists() or p.read_text("utf-8") != content]
    if args.check:
        for path in stale:
            sys.stderr.write(f"chart-readme: {path} is stale; run hack/chart-readme.py\n")
        return 1 if stale else 0
    for path in stale:
        path.write_text(files[path], "utf-8")
        sys.stderr.write(f"chart-readme: wrote {path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
