"""Trigger filters: ``filter_fields`` and a small, safe expression language for ``filter_expression``.

An expression reads an event: ``data.amount > 100 and source == "billing"``,
``data.kind in ["a", "b"]``, ``not (data.user.tier == "free" or data.retry)``. It has comparisons
(``== != < <= > >=``), ``in`` and ``not in``, ``and``, ``or``, ``not``, parentheses, field paths (dotted
names into the event: ``event_type``, ``source``, ``data``, ``correlation_id``, ``priority``,
``metadata``), and literals (numbers, strings in single or double quotes, ``true``, ``false``,
``null``, lists of literals). Nothing else: no calls, no attribute access beyond mapping keys, no
``eval``. It is compiled when the program loads; a bad one fails the load with its position.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import SpecError

MAX_EXPRESSION = 2000  # characters
MAX_DEPTH = 32  # nesting of parentheses, lists and not

Predicate = Callable[[Mapping[str, Any]], bool]
Value = Callable[[Mapping[str, Any]], Any]
MISSING = object()

TOKEN = re.compile(
    r"\s*(?:(?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)"
    r"|(?P<string>\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*')"
    r"|(?P<op>==|!=|<=|>=|<|>|\(|\)|\[|\]|,)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_0-9][A-Za-z0-9_]*)*))"
)
KEYWORDS = {"and", "or", "not", "in", "true", "false", "null"}
COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def lookup(event: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted ``path`` of ``event`` (mapping keys only), or ``MISSING``."""
    value: Any = event
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return MISSING
        value = value[part]
    return value


def fields_filter(filters: Mapping[str, Any]) -> Predicate:
    """``filter_fields``: every (dotted) path of the event's ``data`` equals its value."""
    wanted = dict(filters)
    return lambda event: all(lookup(event.get("data") or {}, path) == value for path, value in wanted.items())


class _Parser:
    def __init__(self, text: str, where: str) -> None:
        self.text, self.where = text, where
        self.tokens: list[tuple[str, str, int]] = []
        position = 0
        while position < len(text):
            if text[position:].strip() == "":
                break
            match = TOKEN.match(text, position)
            if match is None or match.end() == position:
                self.fail("unexpected character", len(text) - len(text[position:].lstrip()))
            assert match is not None
            kind = match.lastgroup or ""
            self.tokens.append((kind, match.group(kind), match.start(kind)))
            position = match.end()
        self.index = 0
        self.depth = 0

    def fail(self, what: str, position: int | None = None) -> None:
        at = position if position is not None else (self.tokens[self.index][2] if self.peek() else len(self.text))
        raise SpecError(f"{what} at position {at} of {self.text!r}", path=self.where)

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str, int]:
        token = self.peek()
        if token is None:
            self.fail(f"expected {value!r}" if value else "unexpected end")
        assert token is not None
        if value is not None and token[1] != value:
            self.fail(f"expected {value!r}, found {token[1]!r}")
        self.index += 1
        return token

    def at(self, value: str) -> bool:
        token = self.peek()
        return token is not None and token[1] == value and token[0] in ("op", "name")

    def nested(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.fail(f"nested deeper than {MAX_DEPTH}")

    def expression(self) -> Predicate:
        left = self.conjunction()
        while self.at("or"):
            self.take()
            left = _either(left, self.conjunction())
        return left

    def conjunction(self) -> Predicate:
        left = self.negation()
        while self.at("and"):
            self.take()
            left = _both(left, self.negation())
        return left

    def negation(self) -> Predicate:
        if self.at("not"):
            self.take()
            self.nested()
            inner = self.negation()
            self.depth -= 1
            return lambda e: not inner(e)
        return self.comparison()

    def comparison(self) -> Predicate:
        if self.at("("):
            self.take()
            self.nested()
            inner = self.expression()
            self.take(")")
            self.depth -= 1
            return inner
        left = self.operand()
        if self.peek() is not None and self.peek()[1] in COMPARISONS:  # type: ignore[index]
            compare = COMPARISONS[self.take()[1]]
            right = self.operand()
            return lambda e: _safely(compare, left(e), right(e))
        negated = self.at("not")
        if negated:
            self.take()
            self.take("in")
        elif self.at("in"):
            self.take()
        else:
            return lambda e: left(e) not in (MISSING, None, False, 0, "", [], {})  # a path alone: present, truthy
        right = self.operand()

        def member(e: Mapping[str, Any]) -> bool:
            container = right(e)
            found = isinstance(container, (list, str, Mapping)) and _safely(operator.contains, container, left(e))
            return found != negated

        return member

    def operand(self) -> Value:
        token = self.take()
        kind, text, position = token
        if kind == "number":
            number = json.loads(text)
            return lambda e: number
        if kind == "string":
            literal = _unquote(text)
            return lambda e: literal
        if kind == "name" and text in ("true", "false", "null"):
            constant = {"true": True, "false": False, "null": None}[text]
            return lambda e: constant
        if kind == "name" and text not in KEYWORDS:
            return lambda e: lookup(e, text)
        if text == "[":
            self.nested()
            items: list[Value] = []
            while not self.at("]"):
                items.append(self.operand())
                if not self.at("]"):
                    self.take(",")
            self.take("]")
            self.depth -= 1
            return lambda e: [item(e) for item in items]
        self.fail(f"expected a field, a literal or a list, found {text!r}", position)
        raise AssertionError("unreachable")


def _either(first: Predicate, second: Predicate) -> Predicate:
    return lambda event: first(event) or second(event)


def _both(first: Predicate, second: Predicate) -> Predicate:
    return lambda event: first(event) and second(event)


def _unquote(text: str) -> str:
    body = text[1:-1]
    return re.sub(r"\\(.)", r"\1", body)


def _safely(compare: Callable[[Any, Any], bool], left: Any, right: Any) -> bool:
    """A comparison of values that cannot be compared (a missing field, a number and a string) is False."""
    if left is MISSING or right is MISSING:
        return False
    try:
        return bool(compare(left, right))
    except TypeError:
        return False


def compile_expression(text: str, where: str = "filter_expression") -> Predicate:
    """The predicate of a ``filter_expression``.

    Raises:
        SpecError: the expression is too long, nests too deep, or does not parse (naming the position).
    """
    if len(text) > MAX_EXPRESSION:
        raise SpecError(f"a filter expression has at most {MAX_EXPRESSION} characters, not {len(text)}", path=where)
    parser = _Parser(text, where)
    if not parser.tokens:
        parser.fail("empty expression")
    predicate = parser.expression()
    if parser.peek() is not None:
        parser.fail(f"unexpected {parser.peek()[1]!r}")  # type: ignore[index]
    return predicate
