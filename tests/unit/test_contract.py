"""The sidecar <-> operator contract: what the webhook writes is what the sidecar parses."""

from __future__ import annotations

import argparse
import typing

import pytest
from promptcache_operator import rendering
from promptcache_operator.settings import InjectorConfig, parse_injector_config
from promptcache_operator.webhook.injection import sidecar_args

from promptcache import contract
from promptcache.sidecar import cli as sidecar_cli
from promptcache.sidecar.config import SidecarSettings


def sidecar_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    sidecar_cli.configure(parser, "sidecar")
    return parser


def test_the_webhooks_command_line_is_one_the_sidecar_parses() -> None:
    config = parse_injector_config(
        {"listenPort": 8100, "adminPort": 9100, "upstreams": {"openai": "http://vllm:8000"}}
    )
    args = sidecar_args(config, policy=True, mode=contract.DEFAULT_MODE)
    assert args[0] == "sidecar"
    parsed = sidecar_parser().parse_args(args[1:])  # an unknown flag exits here
    settings = sidecar_cli.settings_from(parsed)
    assert settings.listen == "127.0.0.1:8100"
    assert settings.admin_listen == "0.0.0.0:9100"
    assert str(settings.policy) == contract.POLICY_PATH
    assert settings.openai_upstream == "http://vllm:8000"


_PENDING = pytest.mark.xfail(
    reason="the sidecar's --anthropic-diagnostics lands on another branch; the webhook "
    "passes it only when injector.anthropicDiagnostics is on",
    strict=False,
)


@pytest.mark.parametrize(
    "setting",
    [
        pytest.param(s, marks=_PENDING)
        if s in (contract.MODE, contract.ANTHROPIC_DIAGNOSTICS)
        and s not in SidecarSettings.model_fields
        else s
        for s in sorted(contract.SIDECAR_SETTINGS)
    ],
)
def test_every_flag_the_webhook_may_pass_is_a_sidecar_setting(setting: str) -> None:
    # mode and anthropic_diagnostics are passed only when they differ from the default
    # (see sidecar_args); the others on every pod. All must be the sidecar's settings.
    assert setting in SidecarSettings.model_fields, (
        f"the webhook passes {contract.sidecar_flag(setting)}, the sidecar has no {setting}"
    )


def test_observe_mode_reaches_the_sidecar() -> None:
    config = parse_injector_config({"mode": "observe"})
    args = sidecar_args(config, policy=False, mode="observe")
    settings = sidecar_cli.settings_from(sidecar_parser().parse_args(args[1:]))
    assert settings.mode == "observe"


def test_defaults_agree() -> None:
    sidecar = SidecarSettings()
    injector = InjectorConfig()
    assert sidecar.listen == contract.DEFAULT_LISTEN
    assert sidecar.admin_listen == contract.DEFAULT_ADMIN_LISTEN
    assert (injector.listen_port, injector.admin_port) == (
        contract.DEFAULT_LISTEN_PORT,
        contract.DEFAULT_ADMIN_PORT,
    )
    assert injector.mode == contract.DEFAULT_MODE == sidecar.mode
    assert set(contract.MODES) == set(
        typing.get_args(SidecarSettings.model_fields["mode"].annotation)
    )


def test_the_rendered_configmap_is_the_one_the_webhook_mounts() -> None:
    assert rendering.configmap_name("support") == contract.configmap_name("support")
    assert contract.POLICY_PATH.endswith("/" + rendering.POLICY_KEY)
