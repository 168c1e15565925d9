"""Where a policy's block texts come from, and inlining them: one walker for every place.

A static block's text may be given by reference (``contentFrom``, ``match.exactFrom``):
locally a ``file`` next to the policy file, in a cluster a ``configMapKeyRef`` the
operator reads. Which kind is allowed is the schema's business (``parse_policy(...,
place=...)`` refuses the wrong kind at validation time); finding the references and
writing their texts back is this module's, once for both places. Only *how* a reference
is read differs, so that is the one parameter: a plain function for files
(``resolve``), an async one for the Kubernetes API (``resolve_async``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from promptcache.policy.schema import ContentSource, PolicySpec


@dataclass(frozen=True, slots=True)
class SourceRef:
    """One referenced text of a policy."""

    where: str
    """The field holding the reference, e.g. ``staticBlocks[0].contentFrom`` (for messages)."""
    source: ContentSource
    block: int
    """Index of the static block."""
    target: Literal["content", "exact"]
    """Which field of the block receives the text: ``content`` or ``match.exact``."""


def source_refs(spec: PolicySpec) -> list[SourceRef]:
    """Every referenced text of ``spec``, in document order."""
    out: list[SourceRef] = []
    for i, block in enumerate(spec.static_blocks):
        if block.content_from is not None:
            out.append(
                SourceRef(f"staticBlocks[{i}].contentFrom", block.content_from, i, "content")
            )
        if block.match is not None and block.match.exact_from is not None:
            where = f"staticBlocks[{i}].match.exactFrom"
            out.append(SourceRef(where, block.match.exact_from, i, "exact"))
    return out


def inline(spec: PolicySpec, refs: Sequence[SourceRef], texts: Sequence[str]) -> PolicySpec:
    """``spec`` with each reference replaced by its text (``texts`` in ``refs`` order)."""
    blocks = list(spec.static_blocks)
    for ref, text in zip(refs, texts, strict=True):
        block = blocks[ref.block]
        if ref.target == "content":
            block = block.model_copy(update={"content": text, "content_from": None})
        else:
            assert block.match is not None  # a ``target: exact`` ref came from a match
            match = block.match.model_copy(update={"exact": text, "exact_from": None})
            block = block.model_copy(update={"match": match})
        blocks[ref.block] = block
    if not refs:
        return spec
    return spec.model_copy(update={"static_blocks": blocks})


def resolve(spec: PolicySpec, read: Callable[[SourceRef], str]) -> PolicySpec:
    """Inline every referenced text, read by ``read`` (which raises on a missing one)."""
    refs = source_refs(spec)
    return inline(spec, refs, [read(ref) for ref in refs])


async def resolve_async(
    spec: PolicySpec, read: Callable[[SourceRef], Awaitable[str]]
) -> PolicySpec:
    """``resolve`` for a reader that does I/O (the operator's ConfigMap lookups)."""
    refs = source_refs(spec)
    return inline(spec, refs, [await read(ref) for ref in refs])
