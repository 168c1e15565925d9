"""``promptcache.tokens``: the fast ``estimate_json`` counts exactly what the rule says.

The planner and the simulator must agree on every estimate, so the iterative walk is
checked against the rule written the plain recursive way, on arbitrary JSON values.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from promptcache.tokens import estimate_json, estimate_text


def reference(value: Any) -> int:
    """The rule, recursively: strings by ceil(len / 4), markers and punctuation free."""
    if isinstance(value, str):
        return max(1, math.ceil(len(value) / 4)) if value else 0
    if isinstance(value, dict):
        return sum(reference(v) for k, v in value.items() if k != "cache_control")
    if isinstance(value, list):
        return sum(reference(v) for v in value)
    if value is None or isinstance(value, bool):
        return 0
    return reference(str(value))


_KEYS = st.sampled_from(["text", "type", "cache_control", "content", "name", "x"]) | st.text(
    max_size=5
)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(_KEYS, inner, max_size=5),
    max_leaves=40,
)


@given(JSON)
def test_estimate_json_follows_the_rule(value: Any) -> None:
    assert estimate_json(value) == reference(value)


def test_markers_are_not_counted_and_strings_round_up() -> None:
    block = {"type": "text", "text": "abcde", "cache_control": {"type": "ephemeral"}}
    assert estimate_json(block) == estimate_text("text") + estimate_text("abcde") == 1 + 2
    assert estimate_json([block, None, True, 12345]) == 3 + 2


def test_subclasses_of_json_types_count_by_the_rule() -> None:
    class Text(str):
        pass

    ordered = OrderedDict([("a", Text("abcdefgh")), ("cache_control", "zzzz")])
    assert estimate_json(ordered) == 2
    assert estimate_json([ordered, Text("abc")]) == 3
