"""Text references of a policy: which kind is allowed where; the one walker inlining them."""

from __future__ import annotations

from pathlib import Path

import pytest

from promptcache.policy import PolicyError, load_policy_file, parse_policy
from promptcache.policy.sources import SourceRef, resolve, source_refs

CM: dict[str, object] = {"configMapKeyRef": {"name": "prompts", "key": "system"}}
FILE: dict[str, object] = {"file": "system.txt"}


def _spec(content_from: dict[str, object], exact_from: dict[str, object]) -> dict[str, object]:
    return {
        "staticBlocks": [
            {"name": "core", "contentFrom": content_from},
            {"name": "tone", "mode": "match", "match": {"exactFrom": exact_from}},
        ]
    }


def test_a_local_policy_refuses_configmap_refs_at_validation() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(_spec(CM, FILE), place="local")
    assert str(info.value).startswith(
        "staticBlocks[0].contentFrom.configMapKeyRef: prompts/system is resolved by the operator"
    )
    with pytest.raises(PolicyError, match=r"^staticBlocks\[1\]\.match\.exactFrom\.configMapKeyRef"):
        parse_policy(_spec(FILE, CM), place="local")


def test_a_cluster_policy_refuses_file_refs_at_validation() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(_spec(CM, FILE), place="cluster")
    assert str(info.value) == (
        "staticBlocks[1].match.exactFrom.file: only in local policy files; use configMapKeyRef"
    )


def test_without_a_place_both_kinds_validate() -> None:
    spec = parse_policy(_spec(CM, FILE))
    refs = source_refs(spec)
    assert [(r.where, r.target) for r in refs] == [
        ("staticBlocks[0].contentFrom", "content"),
        ("staticBlocks[1].match.exactFrom", "exact"),
    ]


def test_one_walker_inlines_content_and_exact_texts() -> None:
    spec = parse_policy(_spec(CM, FILE))
    seen: list[SourceRef] = []

    def read(ref: SourceRef) -> str:
        seen.append(ref)
        return f"text of {ref.where}"

    out = resolve(spec, read)
    core, tone = out.static_blocks
    assert (core.content, core.content_from) == ("text of staticBlocks[0].contentFrom", None)
    assert tone.match is not None
    assert tone.match.exact == "text of staticBlocks[1].match.exactFrom"
    assert tone.match.exact_from is None
    assert len(seen) == 2
    assert source_refs(out) == []


def test_a_local_file_reads_its_texts_and_names_a_missing_one(tmp_path: Path) -> None:
    (tmp_path / "system.txt").write_text("You are kind.")
    (tmp_path / "tone.txt").write_text("Be brief.")
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "staticBlocks:\n"
        "  - {name: core, contentFrom: {file: system.txt}}\n"
        "  - {name: tone, mode: match, match: {exactFrom: {file: tone.txt}}}\n"
    )
    loaded = load_policy_file(policy)
    core, tone = loaded.spec.static_blocks
    assert core.content == "You are kind."
    assert tone.match is not None
    assert tone.match.exact == "Be brief."
    (tmp_path / "tone.txt").unlink()
    with pytest.raises(PolicyError) as info:
        load_policy_file(policy)
    assert str(info.value) == (
        f"{policy}: staticBlocks[1].match.exactFrom.file: cannot read tone.txt: FileNotFoundError"
    )
