"""The injector config (validated strictly, one-line errors) and the operator's flags."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from promptcache_operator.cli import MAX_PRIORITY, configure, options_from_args
from promptcache_operator.settings import (
    DEFAULT_IMAGE,
    ConfigError,
    InjectorConfig,
    load_injector_config,
    parse_injector_config,
)

CONTRACT_EXAMPLE = """\
image: ghcr.io/promptcache/promptcache:0.1.0   # sidecar image (same image as the operator)
imagePullPolicy: IfNotPresent
nativeSidecar: auto
listenPort: 8787
adminPort: 9787
upstreams:
  anthropic: https://api.anthropic.com
  openai: https://api.openai.com
resources:
  requests: {cpu: 50m, memory: 64Mi}
  limits: {cpu: "1", memory: 256Mi}
otel:
  endpoint: ""
  protocol: http/protobuf
  extraEnv: {}
mode: apply
anthropicDiagnostics: false
excludeNamespaces: [kube-system, kube-public, cert-manager]
"""


def test_the_contracts_example_is_valid_and_is_the_default(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(CONTRACT_EXAMPLE)
    config = load_injector_config(path)
    assert config == InjectorConfig(image="ghcr.io/promptcache/promptcache:0.1.0")
    assert load_injector_config(None).image == DEFAULT_IMAGE


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"imagePullPolicy": "Sometimes"}, "imagePullPolicy"),
        ({"nativeSidecar": "yes"}, "nativeSidecar"),
        ({"listenPort": 0}, "listenPort"),
        ({"listenPort": 9000, "adminPort": 9000}, "listenPort and adminPort must differ"),
        ({"upstreams": {"anthropic": "api.anthropic.com"}}, "upstreams.anthropic"),
        ({"resources": {"requests": {"cpu": "lots"}}}, "resources.requests.cpu"),
        ({"otel": {"extraEnv": {"PATH": "/"}}}, "only OTEL_* variables"),
        ({"imagePullPolicyy": "Always"}, "imagePullPolicyy: Extra inputs are not permitted"),
        ([1, 2], "expected a mapping"),
    ],
)
def test_bad_configs_fail_with_one_line(data: object, message: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        parse_injector_config(data)
    text = str(excinfo.value)
    assert message in text
    assert "\n" not in text


def test_unreadable_and_unparsable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_injector_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("image: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_injector_config(bad)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure(parser, "operator")
    return parser.parse_args(list(argv))


def test_the_charts_arguments_parse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "promptcache-system")
    config = tmp_path / "config.yaml"
    config.write_text(CONTRACT_EXAMPLE)
    args = parse(
        "--injector-config", str(config),
        "--webhook-port", "9443",
        "--webhook-cert-dir", str(tmp_path),
        "--namespace", "promptcache-system",
        "--peering", "promptcache",
        "--liveness-port", "8080",
    )  # fmt: skip
    options = options_from_args(args)
    assert options.own_namespace == "promptcache-system"
    assert options.webhook
    assert options.webhook_port == 9443
    assert options.webhook_cert_dir == tmp_path
    assert options.peering_name == "promptcache"
    assert not options.standalone
    assert options.liveness_endpoint == "http://0.0.0.0:8080/healthz"
    assert options.priority is not None
    assert 1 <= options.priority <= MAX_PRIORITY


def test_peers_draw_distinct_priorities_unless_given() -> None:
    drawn = {options_from_args(parse("--peering", "p")).priority for _ in range(20)}
    assert len(drawn) > 1  # equal priorities would pause every peer
    assert options_from_args(parse("--peering", "p", "--priority", "7")).priority == 7
    standalone = options_from_args(parse("--standalone"))
    assert standalone.standalone
    assert standalone.priority is None


def test_standalone_and_peering_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse("--standalone", "--peering", "p")
    assert "not allowed with" in capsys.readouterr().err


def test_namespace_defaults_to_pod_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "ops")
    assert options_from_args(parse("--standalone")).own_namespace == "ops"
    monkeypatch.delenv("POD_NAMESPACE")
    assert options_from_args(parse("--standalone")).own_namespace is None


def test_a_bad_config_stops_the_operator_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from promptcache.cli import main

    bad = tmp_path / "config.yaml"
    bad.write_text("nativeSidecar: sometimes\n")
    assert main(["operator", "--standalone", "--injector-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"promptcache operator: {bad}: injector config: nativeSidecar")
    assert err.count("\n") == 1


def test_a_failed_startup_exits_1_with_the_reason(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "POD_NAMESPACE")}
    env["HOME"] = str(tmp_path)  # no ~/.kube/config either
    promptcache = Path(sys.executable).parent / "promptcache"

    def standalone(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(promptcache), "operator", "--standalone", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    missing = tmp_path / "certs"
    proc = standalone("--webhook-cert-dir", str(missing))
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert (
        last
        == f"promptcache operator: stopped: webhook certificate file missing: {missing}/tls.crt"
    )

    proc = standalone("--no-webhook")
    assert proc.returncode == 1
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .endswith("no Kubernetes credentials (no service account, no kubeconfig)")
    )
