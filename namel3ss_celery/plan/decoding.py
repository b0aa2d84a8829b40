"""Reading the fields of a step message's JSON object.

Each reader checks one field and raises a ``DecodeError`` (or, for the schema
version, a ``SchemaVersionError``) that names the field and what it holds
instead, so a worker that refuses a message says why.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import DecodeError, SchemaVersionError


def read_version(data: Any, known: tuple[int, ...]) -> int:
    """The schema version of a step message.

    Raises:
        SchemaVersionError: ``data`` is not a mapping, or its version is not one of ``known``.
    """
    if not isinstance(data, Mapping):
        raise SchemaVersionError(f"a step message carries a mapping, not {type(data).__name__}")
    version = data.get("v")
    if version not in known or isinstance(version, bool) or not isinstance(version, int):
        names = ", ".join(map(str, known))
        raise SchemaVersionError(
            f"step message schema version {version!r} is not known to this worker (it knows {names})"
        )
    return version


def read_text(data: Mapping[str, Any], name: str) -> str:
    """A non-empty string field. Raises ``KeyError`` when missing, ``DecodeError`` otherwise."""
    value = data[name]
    if not isinstance(value, str) or not value:
        raise DecodeError(f"step message field {name!r} must be a non-empty string, not {value!r}")
    return value


def read_count(data: Mapping[str, Any], name: str) -> int:
    """A whole number >= 0 (not a bool). Raises ``KeyError`` when missing, ``DecodeError`` otherwise."""
    value = data[name]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise DecodeError(f"step message field {name!r} must be a whole number >= 0, not {value!r}")
    return value


def read_mapping(data: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A mapping field, copied. Raises ``KeyError`` when missing, ``DecodeError`` otherwise."""
    value = data[name]
    if not isinstance(value, Mapping):
        raise DecodeError(f"step message field {name!r} must be a mapping, not {type(value).__name__}")
    return dict(value)


def read_seconds(data: Mapping[str, Any], name: str) -> float | None:
    """An optional number of seconds (or a timestamp); ``None`` when absent. Raises ``DecodeError``."""
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise DecodeError(f"step message field {name!r} must be a number, not {value!r}")
    return float(value)
