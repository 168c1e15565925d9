"""Scanners as evidence: checkov and kube-score over the chart and k8s/, promtool over the
alert rules.

* checkov (from its own virtual environment, ``.venv-tools/checkov``: its dependency pins
  clash with ours) and kube-score (built from the Go module proxy by
  ``hack/scanners/build.sh``) scan the chart rendered with its defaults and with every
  toggle on (``ci/all-on-values.yaml``), and ``k8s/``. Every finding must be listed once,
  with its reason, in ``hack/scanners/accepted.yaml``; a new finding fails, and so does
  an accepted one that no scanner reports any more (the list stays true).
* promtool (same build script) checks the rendered PrometheusRule with ``--lint=all`` and
  unit-tests every alert with input series: each fires on a broken workload after its
  ``for`` and stays silent on a healthy one.

Nothing is skipped: a scanner that cannot be found or built fails these tests.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.chart_support import ALL_ON, render
from tests.cluster.controlplane import REPO_ROOT

CHECKOV = REPO_ROOT / ".venv-tools" / "checkov" / "bin" / "checkov"
SCANNERS_BUILD = REPO_ROOT / "hack" / "scanners" / "build.sh"
ACCEPTED = REPO_ROOT / "hack" / "scanners" / "accepted.yaml"
K8S = REPO_ROOT / "k8s"
TIMEOUT = 600

Finding = tuple[str, str]  # (check, "<Kind>/<name>")


@pytest.fixture(scope="session")
def scanners_dir() -> Path:
    try:
        proc = subprocess.run(
            [str(SCANNERS_BUILD)], capture_output=True, text=True, timeout=3600, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"hack/scanners/build.sh: {exc}", pytrace=False)
    if proc.returncode != 0:
        pytest.fail(f"hack/scanners/build.sh failed:\n{proc.stderr[-3000:]}", pytrace=False)
    return Path(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def targets(kubebin_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """What is scanned: the rendered chart (one file per value set) and k8s/'s manifests."""
    out = tmp_path_factory.mktemp("scan")
    files: dict[str, list[Path]] = {}
    for name, values in (("defaults", []), ("all-on", ["-f", str(ALL_ON)])):
        path = out / f"chart-{name}.yaml"
        docs = render(kubebin_dir, *values)
        path.write_text("\n---\n".join(yaml.safe_dump(d) for d in docs))
        files[f"chart {name}"] = [path]
    files["k8s/"] = [
        p
        for p in sorted(K8S.rglob("*.yaml"))
        if p.name != "kustomization.yaml" and "crds" not in p.parts
    ]
    return files


def accepted(tool: str) -> dict[Finding, str]:
    entries = yaml.safe_load(ACCEPTED.read_text())[tool] or []
    found: dict[Finding, str] = {}
    for entry in entries:
        key = (entry["check"], entry["object"])
        assert key not in found, f"{tool}: {key} is listed twice in {ACCEPTED.name}"
        assert len(entry["reason"].split()) >= 8, f"{tool}: {key} needs a real reason"
        found[key] = entry["reason"]
    return found


def compare(tool: str, seen: dict[Finding, set[str]]) -> None:
    known = accepted(tool)
    new = {f"{check} {obj} (in {', '.join(sorted(where))})" for (check, obj), where in seen.items()
           if (check, obj) not in known}  # fmt: skip
    stale = sorted(f"{check} {obj}" for check, obj in known if (check, obj) not in seen)
    assert not new, f"{tool} reports findings not in {ACCEPTED.name}: {sorted(new)}"
    assert not stale, f"{ACCEPTED.name} accepts {tool} findings nobody reports: {stale}"


def _object(resource: str) -> str:
    """checkov's ``Kind.namespace.name[.labels...]`` (or ``Kind.name``) -> ``Kind/name``."""
    parts = resource.split(".")
    return f"{parts[0]}/{parts[2] if len(parts) > 2 else parts[1]}"


def test_checkov(targets: dict[str, list[Path]], tmp_path: Path) -> None:
    if not CHECKOV.is_file():
        pytest.fail(f"{CHECKOV} missing: run `make tools`", pytrace=False)
    seen: dict[Finding, set[str]] = {}
    for label, paths in targets.items():
        files = [arg for p in paths for arg in ("-f", str(p))]
        proc = subprocess.run(
            [str(CHECKOV), *files, "--framework", "kubernetes", "-o", "json", "--quiet"],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
            cwd=tmp_path,
            env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": ""},
        )
        assert proc.returncode in (0, 1), f"checkov on {label}: {proc.stderr[-2000:]}"
        reports: Any = json.loads(proc.stdout) if proc.stdout.strip() else []
        reports = reports if isinstance(reports, list) else [reports]
        passed = sum(r.get("summary", {}).get("passed", 0) for r in reports)
        assert passed > 0, f"checkov checked nothing in {label}"
        for report in reports:
            results = report.get("results", {})
            for failed in results.get("failed_checks", []):
                key = (failed["check_id"], _object(failed["resource"]))
                seen.setdefault(key, set()).add(label)
    compare("checkov", seen)


def test_kube_score(scanners_dir: Path, targets: dict[str, list[Path]]) -> None:
    seen: dict[Finding, set[str]] = {}
    for label, paths in targets.items():
        proc = subprocess.run(
            [str(scanners_dir / "kube-score"), "score", "-o", "json", *map(str, paths)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert proc.stdout.strip(), f"kube-score on {label}: {proc.stderr[-2000:]}"
        for obj in json.loads(proc.stdout):
            name = f"{obj['type_meta']['kind']}/{obj['object_meta']['name']}"
            for check in obj.get("checks") or []:
                if check.get("skipped") or check.get("grade", 10) >= 10:
                    continue  # 10: all OK
                key = (check["check"]["id"], name)
                seen.setdefault(key, set()).add(label)
    compare("kube-score", seen)


# ------------------------------------------------------------------ promtool


def _rules_file(kubebin_dir: Path, directory: Path) -> Path:
    docs = render(kubebin_dir, "-f", str(ALL_ON))
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    return path


def test_promtool_checks_the_rules(scanners_dir: Path, kubebin_dir: Path, tmp_path: Path) -> None:
    rules = _rules_file(kubebin_dir, tmp_path)
    proc = subprocess.run(
        [
            str(scanners_dir / "promtool"),
            "check",
            "rules",
            "--lint=all",
            "--lint-fatal",
            str(rules),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 5 rules found" in proc.stdout + proc.stderr


ALERT_TESTS = REPO_ROOT / "charts" / "promptcache" / "ci" / "alerts-test.yaml"


def test_promtool_unit_tests_every_alert(
    scanners_dir: Path, kubebin_dir: Path, tmp_path: Path
) -> None:
    _rules_file(kubebin_dir, tmp_path)
    tests = yaml.safe_load(ALERT_TESTS.read_text())
    tests["rule_files"] = ["rules.yaml"]
    rendered = yaml.safe_load(_rules_file(kubebin_dir, tmp_path).read_text())
    alerts = {r["alert"] for g in rendered["groups"] for r in g["rules"]}
    tested = {
        case["alertname"]
        for test in tests["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert tested == alerts, f"alerts without a firing test: {sorted(alerts - tested)}"
    path = tmp_path / "alerts-test.yaml"
    path.write_text(yaml.safe_dump(tests))
    proc = subprocess.run(
        [str(scanners_dir / "promtool"), "test", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout + proc.stderr
