"""``promptcache policy check`` and ``promptcache explain``: output and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from promptcache.cli import main

STATIC = "Static instructions for the support agent. " * 120


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "static.txt").write_text(STATIC)
    (tmp_path / "policy.yaml").write_text(
        "apiVersion: promptcache.io/v1alpha1\n"
        "kind: PromptPolicy\n"
        "metadata: {name: support-agent}\n"
        "spec:\n"
        "  staticBlocks:\n"
        "    - name: core\n"
        "      mode: match\n"
        "      match: {role: system, position: 0, exactFrom: {file: static.txt}}\n"
        "  volatile: {action: relocate, unmatchedSystem: relocate}\n"
    )
    system = f"Current date and time: 2025-05-01T10:00:00Z\n\n{STATIC}\n\n<customer>J</customer>"
    request = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "system": system,
        "messages": [
            {"role": "user", "content": "Where is my order? " * 40},
            {"role": "assistant", "content": "Checking. " * 40},
            {"role": "user", "content": "Thanks."},
        ],
    }
    (tmp_path / "request.json").write_text(json.dumps(request))
    return tmp_path


def test_policy_check_prints_estimate_and_breakpoints(
    files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["policy", "check", str(files / "policy.yaml")]) == 0
    out = capsys.readouterr().out
    assert "policy support-agent: valid" in out
    assert "~1,290 tokens" in out
    assert "minimum cacheable (default model): 1,024 tokens -> cacheable" in out
    assert "1. system: end of the static system part" in out


def test_policy_check_warns_about_volatile_text_in_a_static_block(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("staticBlocks: [{name: core, content: 'Today is 2025-05-01. Be nice.'}]\n")
    assert main(["policy", "check", str(path), "--model", "claude-haiku-4-5"]) == 0
    out = capsys.readouterr().out
    assert "warning: 1 volatile-looking span(s) (datetime)" in out
    assert "4,096 tokens -> below the minimum" in out


def test_explain_marks_breakpoints_and_context(
    files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["explain", "--policy", str(files / "policy.yaml"), str(files / "request.json")])
    assert code == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    system_line = next(line for line in lines if line.strip().startswith("system[0]"))
    assert "<== breakpoint (5m)" in system_line
    assert any("[context after the cached prefix: system]" in line for line in lines)
    assert "breakpoints: system@system[0](5m), history@messages[1].content[0](5m)" in out
    assert "relocated: unmatched_system system[0]@0+45" in out
    assert "cache diagnostics: with the sidecar's --anthropic-diagnostics" in out


def test_explain_says_when_a_policy_opts_out_of_cache_diagnostics(
    files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = files / "policy.yaml"
    policy.write_text(policy.read_text() + "  anthropicDiagnostics: false\n")
    assert main(["explain", "--policy", str(policy), str(files / "request.json")]) == 0
    assert "cache diagnostics: off for this policy" in capsys.readouterr().out
    assert main(["policy", "check", str(policy)]) == 0
    assert "cache diagnostics: off for this policy" in capsys.readouterr().out


def test_explain_json_prints_the_rewritten_body(
    files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "explain",
        "--json",
        "--policy",
        str(files / "policy.yaml"),
        str(files / "request.json"),
    ]
    assert main(args) == 0
    sent = json.loads(capsys.readouterr().out)
    assert sent["system"] == [
        {"type": "text", "text": STATIC, "cache_control": {"type": "ephemeral"}}
    ]


@pytest.mark.parametrize(
    ("policy_text", "request_text", "message"),
    [
        ("staticBlocks: [{name: Bad!, content: x}]\n", None, "staticBlocks[0].name: String should"),
        ("volatile: {action: move}\n", None, "volatile.action: Input should be 'report' or"),
        (
            "staticBlocks: [{name: a, mode: match}]\n",
            None,
            "staticBlocks[0]: mode match needs match",
        ),
        ("provider: [\n", None, "not valid YAML at line"),
        ("{}\n", '{"messages": [1,]}', "request.json: not valid JSON at line 1 column 17"),
        ("{}\n", "[]", "request.json: expected a JSON object"),
        ("{}\n", '{"messages": "hi"}', "request.json: cannot plan: messages: expected a list"),
    ],
)
def test_bad_files_give_one_line_and_exit_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    policy_text: str,
    request_text: str | None,
    message: str,
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text)
    request = tmp_path / "request.json"
    request.write_text(request_text or '{"messages": []}')
    args = ["explain", "--policy", str(policy), str(request)]
    if request_text is None:
        args = ["policy", "check", str(policy)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("promptcache: error: ")
    assert message in err


def test_no_traceback_from_the_real_command(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("breakpoints: {system: maybe}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "promptcache", "policy", "check", str(policy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"promptcache: error: {policy}: breakpoints.system: Input should be a valid boolean, "
        "unable to interpret input"
    ]
