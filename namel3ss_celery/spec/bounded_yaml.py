"""YAML with bounds: PyYAML's safe loader, refusing a document too deep or too large once aliases expand.

A few hundred bytes of nested aliases (the "billion laughs") expand to billions of
values; PyYAML builds them as shared objects, but whatever walks them afterwards
(validation, JSON) pays for every copy. The composer here counts each node's
expanded size as it builds the node graph, before anything is constructed.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from .limits import MAX_YAML_DEPTH, MAX_YAML_NODES


class YAMLTooLarge(yaml.YAMLError):
    """A YAML document over a bound (``MAX_YAML_NODES``, ``MAX_YAML_DEPTH``); the message says which and where."""


class BoundedSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses documents nested or expanding past the bounds of ``limits``."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._sizes: dict[int, int] = {}  # id of each composed node -> its value count, aliases expanded

    def _where(self) -> str:
        mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
        return f"at line {mark.line + 1}, column {mark.column + 1}"

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            where = self._where()
            node = super().compose_node(parent, index)
            if node is not None and id(node) not in self._sizes:
                raise YAMLTooLarge(f"a YAML alias refers to a node that contains it (a recursive structure), {where}")
            return node
        where = self._where()
        self._depth += 1
        if self._depth > MAX_YAML_DEPTH:
            raise YAMLTooLarge(f"the YAML nests more than {MAX_YAML_DEPTH} levels deep (MAX_YAML_DEPTH), {where}")
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if node is not None:
            size = 1 + sum(self._sizes[id(child)] for child in _children(node))
            if size > MAX_YAML_NODES:
                raise YAMLTooLarge(
                    f"the YAML expands to more than {MAX_YAML_NODES} values (MAX_YAML_NODES; an alias counts "
                    f"every value it repeats), {where}"
                )
            self._sizes[id(node)] = size
        return node


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` within the bounds.

    Raises:
        YAMLTooLarge: the document is nested too deep or expands too large.
        yaml.YAMLError: it is not valid YAML.
    """
    loader = BoundedSafeLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
