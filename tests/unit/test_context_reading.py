"""Which answers count as text, and how their bytes are decoded."""

from __future__ import annotations

import pytest

from promptcache.sidecar.context import SourceError
from promptcache.sidecar.context.reading import decode, is_text_type


@pytest.mark.parametrize(
    "media_type",
    [
        "text/plain",
        "text/markdown",
        "text/html",
        "application/json",
        "application/ld+json",
        "application/problem+json",
        "application/atom+xml",
        "application/yaml",
    ],
)
def test_text_types(media_type: str) -> None:
    assert is_text_type(media_type)


@pytest.mark.parametrize(
    "media_type",
    ["application/octet-stream", "image/png", "application/pdf", "audio/mpeg", "application/zip"],
)
def test_not_text_types(media_type: str) -> None:
    assert not is_text_type(media_type)


def test_declared_charset_is_used_and_bad_bytes_replaced() -> None:
    assert decode("é".encode("latin-1"), declared=True, charset="latin-1") == "é"
    assert decode(b"ok \xff", declared=True, charset=None) == "ok \ufffd"
    assert decode(b"ok", declared=True, charset="no-such-charset") == "ok"


def test_undeclared_bytes_must_be_utf8_without_nul() -> None:
    assert decode("héllo".encode(), declared=False, charset=None) == "héllo"
    for data in (b"\xff\xfe", b"a\0b"):
        with pytest.raises(SourceError) as info:
            decode(data, declared=False, charset=None)
        assert info.value.reason == "not_text"
