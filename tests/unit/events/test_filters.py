"""The trigger filter language: what it matches, and bad expressions refused with their position."""

from __future__ import annotations

import pytest

from namel3ss_celery.errors import SpecError
from namel3ss_celery.events.filters import MAX_DEPTH, MAX_EXPRESSION, compile_expression, fields_filter

EVENT = {
    "event_type": "custom",
    "source": "billing",
    "priority": 1,
    "data": {"amount": 150, "user": {"tier": "gold", "id": 7}, "kind": "a", "tags": ["x", "y"], "retry": False},
}


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ('data.amount > 100 and source == "billing"', True),
        ("data.amount >= 150 and data.amount <= 150", True),
        ("data.amount < 100 or data.kind == 'a'", True),
        ('data.kind in ["a", "b"]', True),
        ('data.kind not in ["a", "b"]', False),
        ('"x" in data.tags', True),
        ('not (data.user.tier == "free" or data.retry)', True),
        ("data.user.id == 7 and priority == 1", True),
        ("data.missing == 1", False),  # a missing field equals nothing
        ("data.missing != 1", False),  # nor differs: a comparison with a missing field is false
        ('data.amount > "x"', False),  # values that do not compare: false, not an error
        ("data.user.tier", True),  # a path alone: present and truthy
        ("data.retry", False),
        ("data.amount == 1.5e2", True),
        ("data.retry == false and source != null", True),
    ],
)
def test_what_an_expression_matches(expression: str, expected: bool) -> None:
    assert compile_expression(expression)(EVENT) is expected


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("data.amount >", "unexpected end at position 13"),
        ("(data.a == 1", "expected ')' at position 12"),
        ("data.a === 1", "unexpected character at position 9"),
        ("data.a == 1 data.b", "unexpected 'data.b' at position 12"),
        ('__import__("os")', "unexpected '(' at position 10"),
        ("data.keys()", "unexpected '(' at position 9"),
        ("", "empty expression at position 0"),
        ("data.a == 1 and", "unexpected end at position 15"),
        ("data.a in [1, 2", "expected ',' at position 15"),
        ("not", "unexpected end at position 3"),
        ('data.a == "open', "unexpected character at position 10"),
        ("data.a ; data.b", "unexpected character at position 7"),
        ("data.a == and", "expected a field, a literal or a list, found 'and' at position 10"),
        ("(" * (MAX_DEPTH + 1) + "data.a" + ")" * (MAX_DEPTH + 1), f"nested deeper than {MAX_DEPTH}"),
    ],
)
def test_a_bad_expression_is_refused_with_its_position(expression: str, message: str) -> None:
    with pytest.raises(SpecError, match="event_triggers") as info:
        compile_expression(expression, "event_triggers[0].filter_expression")
    assert message in str(info.value)
    assert info.value.path == "event_triggers[0].filter_expression"


def test_an_expression_has_a_size_limit() -> None:
    with pytest.raises(SpecError, match=f"at most {MAX_EXPRESSION} characters"):
        compile_expression("data.a == 1 or " * 200 + "data.a == 1")


def test_filter_fields_match_dotted_paths_of_the_data() -> None:
    assert fields_filter({"user.tier": "gold", "kind": "a"})(EVENT)
    assert not fields_filter({"user.tier": "free"})(EVENT)
    assert not fields_filter({"user.missing": None})(EVENT)
