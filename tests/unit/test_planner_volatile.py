"""The volatile-span detectors, relocation units and cutting."""

from __future__ import annotations

import pytest

from promptcache.policy.schema import VolatilePattern, VolatileSpec
from promptcache.sidecar.planner.memo import Memos
from promptcache.sidecar.planner.volatile import Detector, Span, cut, relocation_units

ALL = Detector(VolatileSpec())


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("Now: 2025-05-01T10:00:00Z.", [("datetime", "2025-05-01T10:00:00Z")]),
        ("at 2025-05-01 10:00:00+02:00 ok", [("datetime", "2025-05-01 10:00:00+02:00")]),
        ("due 2025-05-01, then", [("datetime", "2025-05-01")]),
        ("Date: Thu, 01 May 2025 10:00:00 GMT", [("datetime", "Thu, 01 May 2025 10:00:00 GMT")]),
        ("Date: 1 May 2025 10:00 +0200.", [("datetime", "1 May 2025 10:00 +0200")]),
        (
            "id=0b6c1c1e-8a8e-4b6a-9f57-2f0c5d9a1b11;",
            [("uuid", "0b6c1c1e-8a8e-4b6a-9f57-2f0c5d9a1b11")],
        ),
        ("trace deadbeef00112233 end", [("hex_id", "deadbeef00112233")]),
        ("order 1712345678 shipped", [("numeric_id", "1712345678")]),
        # not volatile: short numbers, words made of hex letters, times without a date
        ("Refunds within 30 days, version 4.2, at 10:00, see section 12.", []),
        ("a deadbeefcafebabe word", []),
        ("call 555-1234 or 1234567", []),
    ],
)
def test_builtin_detectors(text: str, found: list[tuple[str, str]]) -> None:
    assert [(s.detector, text[s.start : s.end]) for s in ALL.find(text)] == found


def test_only_enabled_detectors_and_policy_patterns() -> None:
    spec = VolatileSpec(
        detectors=["uuid"], patterns=[VolatilePattern(name="ticket", regex=r"TICKET-\d+")]
    )
    det = Detector(spec)
    text = "2025-05-01 TICKET-7 0b6c1c1e-8a8e-4b6a-9f57-2f0c5d9a1b11"
    assert [s.detector for s in det.find(text)] == ["ticket", "uuid"]


def test_overlapping_spans_keep_the_first() -> None:
    spec = VolatileSpec(patterns=[VolatilePattern(name="stamp", regex=r"Now: \S+")])
    spans = Detector(spec).find("Now: 2025-05-01T10:00:00Z")
    assert [s.detector for s in spans] == ["stamp"]


def test_detector_is_compiled_once_per_spec_and_planner() -> None:
    spec = VolatileSpec()
    memo = Memos()
    assert memo.detector(spec) is memo.detector(spec)
    assert memo.detector(VolatileSpec()) is not memo.detector(spec)
    assert Memos().detector(spec) is not memo.detector(spec)


def test_short_lines_move_whole_long_lines_only_the_span() -> None:
    long_line = "x " * 200 + "2025-05-01 " + "y " * 10
    text = f"Time: 2025-05-01T10:00:00Z\nbody\n{long_line}"
    units = relocation_units(text, ALL.find(text))
    assert [text[u.start : u.end] for u in units] == ["Time: 2025-05-01T10:00:00Z", "2025-05-01"]
    assert cut(text, units) == ("body\n" + long_line.replace("2025-05-01", "")).strip()


def test_cut_removes_whole_lines_with_their_break() -> None:
    text = "a\nID: 1712345678\nb"
    assert cut(text, [Span("numeric_id", 2, 16)]) == "a\nb"
