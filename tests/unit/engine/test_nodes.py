"""A node's context, read back from the run's record."""

from __future__ import annotations

import json

import pytest

from namel3ss_celery.engine.nodes import node_context
from namel3ss_celery.errors import DecodeError
from namel3ss_celery.plan import fields


def test_the_outputs_so_far_join_the_recorded_ones() -> None:
    record = {fields.CONTEXT: json.dumps({"user": "ada", "outputs": {"given": 1}})}
    assert node_context(record, {"fetch": 2}) == {"user": "ada", "outputs": {"given": 1, "fetch": 2}}


@pytest.mark.parametrize(
    ("context", "says"),
    [([1, 2, 3], "context is list"), ({"outputs": [1]}, "context.outputs is list"), ({"outputs": None}, "NoneType")],
)
def test_a_recorded_context_of_the_wrong_shape_is_a_decode_error(context: object, says: str) -> None:
    # dispatch refuses both (tests/unit/spec/test_bad_input.py): only a record written otherwise has them
    with pytest.raises(DecodeError, match=says):
        node_context({fields.CONTEXT: json.dumps(context)}, {"fetch": 2})
