"""The chart's generated and hand-written files agree with the code they describe.

No helm needed here (the cluster tier renders the chart): these tests read files. The
README and schema are generated from values.yaml; the dashboard and alert rules name
metrics and label values the sidecar must really export; the Dockerfile, .dockerignore
and skaffold.yaml must keep up with the packages and the values they refer to.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from promptcache_operator.metrics import OperatorMetrics

import promptcache
from promptcache.sidecar.context import ContextMetrics
from promptcache.sidecar.learning_metrics import LearningCollector
from promptcache.sidecar.metrics import Metrics
from promptcache.sidecar.planner import Planner
from promptcache.sidecar.planner.types import MissReason

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "promptcache"
README_TOOL = REPO / "hack" / "chart-readme.py"
_METRIC = re.compile(r"\b(promptcache_[a-z0-9_]+)")
_SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_created")


def _exported() -> dict[str, str]:
    """Metric family name -> help text, from a fresh sidecar registry (the proxy's and
    the context phase's metrics, as the sidecar app registers them)."""
    registry = CollectorRegistry()
    Metrics(registry)
    ContextMetrics(registry)
    OperatorMetrics(registry)  # the operator's, for the webhook alert
    registry.register(LearningCollector(Planner()))
    return {family.name: family.documentation for family in registry.collect()}


def _family(sample_name: str) -> str:
    for suffix in _SUFFIXES:
        if sample_name.endswith(suffix):
            return sample_name[: -len(suffix)]
    return sample_name


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads((CHART / "dashboards" / "promptcache.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    return exprs


def _alert_text() -> str:
    return (CHART / "templates" / "alerts-prometheusrule.yaml").read_text()


def test_readme_and_schema_are_generated_from_values() -> None:
    proc = subprocess.run(
        [sys.executable, str(README_TOOL), "--check"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr


def test_every_value_must_be_documented(tmp_path: Path) -> None:
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    values = chart / "values.yaml"
    values.write_text(values.read_text() + "\nundocumented: true\n")
    proc = subprocess.run(
        [sys.executable, str(README_TOOL), "--check", str(chart)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "undocumented has no comment" in proc.stderr


def test_schema_is_strict_and_bounds_the_webhook_timeout() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    webhook = schema["properties"]["webhook"]
    assert webhook["additionalProperties"] is False
    assert webhook["properties"]["timeoutSeconds"]["maximum"] == 10
    assert webhook["properties"]["failurePolicy"]["enum"] == ["Ignore", "Fail"]


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_monitoring_uses_exported_metrics(source: str) -> None:
    text = "\n".join(_dashboard_exprs()) if source == "dashboard" else _alert_text()
    used = {_family(m) for m in _METRIC.findall(text)}
    assert used, "no promptcache metric referenced"
    missing = used - set(_exported())
    assert not missing, f"{source} uses metrics the sidecar does not export: {sorted(missing)}"


def test_monitoring_uses_real_label_values() -> None:
    text = "\n".join(_dashboard_exprs()) + _alert_text()
    kinds = set(re.findall(r'kind="([a-z_]+)"', text))
    assert kinds == {"cache_read"}
    reasons = set(re.findall(r'reason="([a-z_]+)"', text))
    assert reasons
    assert reasons <= set(typing.get_args(MissReason))
    # outcomes: the requests counter's help text lists its vocabulary
    help_text = _exported()["promptcache_requests"]
    vocabulary = set(re.findall(r"[a-z_]+", help_text.split("(", 1)[1].split(")", 1)[0]))
    failures = re.search(r'\$upstreamFailures := "([a-z_|]+)"', _alert_text())
    assert failures is not None
    assert set(failures[1].split("|")) <= vocabulary - {"ok", "client_error", "client_closed"}


def test_dashboard_has_the_panels_the_issue_asks_for() -> None:
    dashboard = json.loads((CHART / "dashboards" / "promptcache.json").read_text())
    exprs = "\n".join(_dashboard_exprs())
    assert 'promptcache_input_tokens_total{kind="cache_read"' in exprs  # hit rate, cached tokens
    assert "promptcache_cost_without_cache_usd_total" in exprs  # cost saved
    assert "histogram_quantile(0.95, sum by (le) (rate(promptcache_time_to_first_token" in exprs
    assert "sum by (reason) (rate(promptcache_cache_misses_total" in exprs
    assert "promptcache_context_fetch_duration_seconds_bucket" in exprs  # context prefetch
    assert "promptcache_context_coalesced_total" in exprs
    assert "promptcache_guard_unread_write_tokens_total" in exprs  # never worse
    assert "promptcache_guard_tracks" in exprs
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_chart_app_version_is_the_package_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert chart["appVersion"] == pyproject["project"]["version"] == promptcache.__version__


def test_k8s_base_crds_are_copies_of_the_charts() -> None:
    chart_crds = sorted((CHART / "crds").glob("*.yaml"))
    assert chart_crds
    copies = sorted(p.name for p in (REPO / "k8s" / "base" / "crds").glob("*.yaml"))
    assert copies == [p.name for p in chart_crds], "run hack/render-k8s.py"
    for crd in chart_crds:
        copy = REPO / "k8s" / "base" / "crds" / crd.name
        assert copy.read_bytes() == crd.read_bytes(), f"{crd.name}: run hack/render-k8s.py"


def _final_stage(dockerfile: str) -> str:
    return re.split(r"^FROM ", dockerfile, flags=re.MULTILINE)[-1]


def test_dockerfile_final_stage_is_slim_and_non_root() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", dockerfile, flags=re.MULTILINE)) == 2  # multi-stage
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in dockerfile
    final = _final_stage(dockerfile)
    assert final.startswith("${PYTHON_IMAGE}\n")
    assert re.search(r"^USER 65532:65532$", final, flags=re.MULTILINE)
    assert re.search(r'^ENTRYPOINT \["promptcache"\]$', final, flags=re.MULTILINE)
    for tool in ("apt-get", "gcc", "build-essential", "COPY . "):
        assert tool not in final, tool
    assert "pip uninstall --yes pip setuptools wheel" in final


def test_docker_context_holds_every_package() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    found = pyproject["tool"]["setuptools"]["packages"]["find"]
    roots = {p.rstrip("*") for p in found["include"]}
    dockerfile = (REPO / "Dockerfile").read_text()
    dockerignore = (REPO / ".dockerignore").read_text().splitlines()
    for package in roots:
        folder = package if (REPO / package).is_dir() else "operator"  # where = [".", "operator"]
        assert (REPO / folder / package).is_dir() or (REPO / folder).is_dir(), package
        assert f"COPY {folder} ./{folder}" in dockerfile, folder
        assert f"!{folder}/" in dockerignore, folder
    for needed in ("pyproject.toml", "README.md"):
        assert f"!{needed}" in dockerignore


def test_skaffold_sets_values_that_exist() -> None:
    skaffold = yaml.safe_load((REPO / "skaffold.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    (artifact,) = skaffold["build"]["artifacts"]
    image = artifact["image"]
    releases = skaffold["deploy"]["helm"]["releases"] + [
        r for p in skaffold["profiles"] for r in p.get("deploy", {}).get("helm", {})["releases"]
    ]
    assert {p["name"] for p in skaffold["profiles"]} == {"kind"}
    for release in releases:
        assert (REPO / release["chartPath"] / "Chart.yaml").is_file()
        values = {**release.get("setValueTemplates", {}), **release.get("setValues", {})}
        assert values["image.repository"] == f"{{{{.IMAGE_REPO_{image}}}}}"
        for dotted in values:
            node = schema
            for part in dotted.split("."):
                node = node["properties"][part]  # KeyError: not a chart value


def _toggles(schema: dict[str, Any], path: str = "") -> list[str]:
    """Paths of the chart's boolean values (free-form objects like securityContext aside)."""
    if schema.get("type") == "boolean":
        return [path]
    found: list[str] = []
    for key, child in schema.get("properties", {}).items():
        found += _toggles(child, f"{path}.{key}" if path else key)
    return found


def _merge(base: dict[str, object], over: dict[str, object]) -> dict[str, object]:
    merged = dict(base)
    for key, value in over.items():
        old = merged.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            merged[key] = _merge(old, value)
        else:
            merged[key] = value
    return merged


def test_all_on_values_switch_every_toggle_on() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    all_on = yaml.safe_load((CHART / "ci" / "all-on-values.yaml").read_text())
    merged = _merge(values, all_on)
    toggles = _toggles(json.loads((CHART / "values.schema.json").read_text()))
    assert len(toggles) >= 10

    def value(path: str) -> object:
        node: Any = merged
        for part in path.split("."):
            node = node[part]
        return node

    off = sorted(path for path in toggles if value(path) is not True)
    assert not off, f"ci/all-on-values.yaml leaves these off: {off}"


def test_the_injector_schema_is_the_operators_model() -> None:
    from promptcache_operator.settings import QUANTITY_PATTERN

    injector = json.loads((CHART / "values.schema.json").read_text())["properties"]["injector"]
    memory = injector["properties"]["resources"]["properties"]["requests"]["properties"]["memory"]
    assert memory["pattern"] == QUANTITY_PATTERN  # -1, 1.2.3, 5mm: refused by Helm too
    assert memory["type"] == ["string", "null"]
    assert injector["properties"]["listenPort"]["minimum"] == 1024
    assert injector["properties"]["mode"]["enum"] == ["observe", "apply"]
    assert injector["additionalProperties"] is False


def test_values_and_the_operators_model_must_name_the_same_injector_keys(tmp_path: Path) -> None:
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    values = chart / "values.yaml"
    text = values.read_text()
    assert "  anthropicDiagnostics: false\n" in text
    values.write_text(text.replace("  anthropicDiagnostics: false\n", ""))
    proc = subprocess.run(
        [sys.executable, str(README_TOOL), "--check", str(chart)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "missing ['anthropicDiagnostics']" in proc.stderr
