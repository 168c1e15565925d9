"""The learner, with plain data: templates found by comparing requests, whatever they hold."""

from __future__ import annotations

import random
import string

from hypothesis import given, settings
from hypothesis import strategies as st

from promptcache.sidecar.learner import Learner, Split
from promptcache.sidecar.learner.units import LONG_LINE, split_units

P = ("messages", "model", "")
STATIC = "\n".join(
    f"Section {i}: answer politely and cite the policy number {i}." for i in range(80)
)


def words(rng: random.Random, n: int) -> str:
    return " ".join("".join(rng.choices(string.ascii_lowercase, k=6)) for _ in range(n))


def texts(text: str, spans: tuple[tuple[int, int], ...]) -> list[str]:
    return [text[a:b] for a, b in spans]


def turn(learner: Learner, text: str, conv: int, n: int, newest: int | None = None) -> Split | None:
    """Turn ``n`` of conversation ``conv`` (keys chained as ``conversation_turn`` does)."""
    previous = hash((conv, n - 1)) if n else None
    return learner.observe(P, text, hash((conv, n)), previous, newest)


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=2000))
def test_units_give_the_text_back(text: str) -> None:
    units = split_units(text)
    assert (units.ends[-1] if len(units) else 0) == len(text)
    assert all(units.start(i) < units.ends[i] for i in range(len(units)))


def test_long_lines_are_cut_at_sentences() -> None:
    line = ("First sentence is here. " * 20).rstrip()
    assert len(line) > LONG_LINE
    assert len(split_units(line)) == 20


def test_a_changing_value_anywhere_is_found_without_any_detector() -> None:
    learner = Learner()
    rng = random.Random(1)
    out: list[Split | None] = []
    for i in range(3):
        # Not a date, not an id: a word nobody's detector knows.
        text = f"{STATIC[:900]}\nMood of the day: {words(rng, 2)}\n{STATIC[900:]}"
        out.append(learner.observe(P, text, conversation=i))
    assert out[0] is None  # seen once: a candidate, never applied
    split = out[2]
    assert split is not None
    assert split.samples == 3
    assert texts(text, split.request) == [f"Mood of the day: {text.split('day: ')[1][:13]}\n"]
    assert "".join(texts(text, split.stable)) == STATIC[:900] + "\n" + STATIC[900:]


def test_per_conversation_text_is_kept_from_the_second_turn_and_the_rest_moves() -> None:
    learner = Learner()
    rng = random.Random(2)
    splits: list[tuple[str, Split | None]] = []
    for conv in range(3):
        customer = f"Customer: {words(rng, 3)}"
        for n in range(3):
            text = f"Now: {rng.random()}\n{STATIC}\n{customer}\nDocs: {words(rng, 5)}\n"
            splits.append((text, turn(learner, text, conv, n)))
    text, split = splits[-1]  # third turn of the third conversation
    assert split is not None
    assert texts(text, split.conversation) == [text.splitlines(keepends=True)[-2]]
    moved = texts(text, split.request)
    assert moved[0].startswith("Now: ")
    assert moved[1].startswith("Docs: ")
    first_text, first_turn = splits[6]
    assert first_turn is not None
    # A new conversation's first turn keeps a line whose label ("Customer: ") was seen
    # unchanged within other conversations, and moves the rest.
    assert texts(first_text, first_turn.conversation) == [first_text.splitlines(True)[-2]]
    fresh = Learner()
    first: Split | None = None
    for conv in range(2):
        for n in range(2):
            text = f"Now: {conv}{n}\n{STATIC}\nCustomer {conv}\nDocs: {n}{conv}\n"
            first = turn(fresh, text, conv, n)
    fresh_text = f"Now: x\n{STATIC}\nCustomer 9\nDocs: y\n"
    first = turn(fresh, fresh_text, 9, 0)
    assert first is not None
    assert first.conversation == ()  # without a label, a first turn relocates it all


def test_a_new_version_is_a_new_template_learned_within_two_requests() -> None:
    learner = Learner()
    for i in range(3):
        learner.observe(P, f"t{i}\n{STATIC}", conversation=i)
    other = STATIC.replace("politely", "briefly")
    assert learner.observe(P, f"t9\n{other}", conversation=9) is None
    split = learner.observe(P, f"t10\n{other}", conversation=10)
    assert split is not None
    assert split.samples == 2
    assert len(learner) == 2


def test_eight_templates_at_once() -> None:
    learner = Learner()
    prompts = [STATIC.replace("Section", f"Part{n}") for n in range(8)]
    for round_ in range(3):
        for n, prompt in enumerate(prompts):
            split = learner.observe(P, f"stamp {round_}-{n}\n{prompt}", conversation=None)
            assert (split is None) == (round_ == 0)
    assert len(learner) == 8


def test_a_flood_of_unique_prompts_stays_within_the_caps_and_keeps_what_was_learned() -> None:
    learner = Learner(max_templates=8, max_candidates=8, max_units=2000)
    for i in range(2):
        learner.observe(P, f"stamp {i}\n{STATIC}", conversation=None)
    rng = random.Random(3)
    for _ in range(500):
        unique = "\n".join(words(rng, 8) for _ in range(40))
        learner.observe(P, unique, conversation=None)
        assert learner.candidates <= 8
        assert len(learner) <= 8
        assert learner.units <= 2000
    assert learner.observe(P, f"stamp x\n{STATIC}", conversation=None) is not None


def test_partitions_keep_templates_apart() -> None:
    learner = Learner()
    learner.observe(P, f"a\n{STATIC}", conversation=None)
    assert learner.observe(("chat", "model", ""), f"b\n{STATIC}", conversation=None) is None
    assert learner.observe(P, f"c\n{STATIC}", conversation=None) is not None


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=5), min_size=2, max_size=12))
def test_spans_partition_the_text_in_order(changes: list[int]) -> None:
    learner = Learner()
    lines = STATIC.splitlines(keepends=True)
    for i, n in enumerate(changes):
        changed = [f"changed {i} {j}\n" if j % 7 == n else line for j, line in enumerate(lines)]
        text = "".join(changed)
        split = learner.observe(P, text, conversation=i % 3)
        if split is None:
            continue
        spans = sorted([*split.stable, *split.conversation, *split.request])
        covered = 0
        for a, b in spans:
            assert a == covered
            covered = b
        assert covered == len(text)


def test_shapes_hold_no_text() -> None:
    learner = Learner()
    secret = "Top secret launch code 0000"
    for i in range(3):
        learner.observe(P, f"{secret} {i}\n{STATIC}", conversation=i)
    shown = repr(learner.shapes())
    assert "secret" not in shown
    assert "Section" not in shown


def test_a_tool_list_sent_in_changing_order_is_learned_and_sorted() -> None:
    from promptcache.sidecar.planner import Planner, PlanRequest

    tools = [
        {"name": n, "description": f"tool {n}", "input_schema": {"type": "object"}}
        for n in ("search", "order_status", "refund", "escalate")
    ]
    planner = Planner()
    sent = []
    hashes = []
    for i in range(6):
        shuffled = random.Random(i).sample(tools, len(tools))
        body = {
            "model": "claude-sonnet-4-6",
            "max_tokens": 5,
            "tools": shuffled,
            "system": f"Now: {i}\n{STATIC}",
            "messages": [{"role": "user", "content": f"q{i}"}],
        }
        plan = planner.plan(PlanRequest(route="messages", body=body, now=float(i)))
        sent.append([t["name"] for t in plan.body["tools"]])
        hashes.append(plan.static_hash)
    # Seen once in each of two orders: sorted from the second request on.
    assert all(names == sorted(names) for names in sent[1:])
    assert len(set(hashes[3:])) == 1  # and the learned static prefix is stable
    # The same app sending one order only is left alone.
    steady = Planner()
    for i in range(3):
        body = {
            "model": "m",
            "max_tokens": 5,
            "tools": tools,
            "messages": [{"role": "user", "content": "q"}],
        }
        plan = steady.plan(PlanRequest(route="messages", body=body, now=float(i)))
        assert [t["name"] for t in plan.body["tools"]] == [t["name"] for t in tools]


def support(conv: int, n: int, customer: str | None = None) -> str:
    """A prompt with a timestamp on top and a customer block between two stable lines,
    unlabelled (order lines whose 'labels' are unique), then retrieved text."""
    rng = random.Random(conv * 100 + n)
    who = customer if customer is not None else f"- order {conv}-{conv * 7}: boots\nnote {conv}"
    return (
        f"Now: {rng.random()}\n{STATIC}\n<customer>\n{who}\n</customer>\n{STATIC[:300]}\n"
        f"Docs: {words(rng, 4)}\n"
    )


def test_a_gap_seen_unchanged_across_turns_is_kept_from_a_new_conversations_first_turn() -> None:
    learner = Learner()
    for conv in range(4):
        for n in range(3):
            turn(learner, support(conv, n), conv, n)
    text = support(9, 0)
    split = turn(learner, text, 9, 0)
    assert split is not None
    kept = "".join(texts(text, split.conversation))
    assert "- order 9-63: boots\nnote 9" in kept  # no label ever seen: the gap's own record
    moved = "".join(texts(text, split.request))
    assert "Now: " in moved
    assert "Docs: " in moved
    assert "order" not in moved


def test_a_first_turn_pins_what_is_unknown_and_the_second_keeps_what_came_back() -> None:
    learner = Learner()
    for i in range(2):  # learn the template from two other prompts (no conversation)
        learner.observe(P, support(50 + i, 0), None)
    texts_seen: list[str] = []
    splits: list[Split] = []
    for n in range(4):
        text = support(1, n)
        split = turn(learner, text, 1, n, newest=2 * n)
        assert split is not None
        texts_seen.append(text)
        splits.append(split)
    first, second, third, fourth = splits
    # Turn 1: nothing is known of the changing text yet: all of it is pinned into the
    # newest user message (no cache entry covers that message yet), nothing moves.
    assert first.pin_at == 0
    assert "Now: " in "".join(texts(texts_seen[0], first.pinned))
    # Turn 2: the customer block came back unchanged and stays pinned in message 0; the
    # timestamp and the documents changed, and move behind the history.
    assert second.pin_at == 0
    pinned = "".join(texts(texts_seen[1], second.pinned))
    assert "- order 1-7: boots\nnote 1" in pinned
    assert "Now: " not in pinned
    moved = "".join(texts(texts_seen[1], second.request))
    assert "Now: " in moved
    assert "Docs: " in moved
    # Later turns pin the same text into the same message: the history carries it cached.
    for later, text in ((third, texts_seen[2]), (fourth, texts_seen[3])):
        assert later.pin_at == 0
        assert "".join(texts(text, later.pinned)) == pinned
    # The customer block changes: the pin can no longer be reproduced, so it moves.
    changed = support(1, 4, customer="- order 1-8: sandals\nnote 1")
    split = turn(learner, changed, 1, 4, newest=8)
    assert split is not None
    assert split.pin_at is None
    assert split.pinned == ()
    assert "sandals" in "".join(texts(changed, split.request))


def test_without_a_message_to_pin_into_nothing_is_pinned() -> None:
    learner = Learner()
    for n in range(4):
        split = turn(learner, support(2, n), 2, n, newest=None)
    assert split is not None
    assert split.pinned == ()
    assert split.pin_at is None
