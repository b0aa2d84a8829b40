"""Triggers compiled when a program loads: bad ones refused naming their field; what matches; emit's checks."""

from __future__ import annotations

from typing import Any

import pytest

from namel3ss_celery import Namel3ssCelery
from namel3ss_celery.errors import SpecError
from namel3ss_celery.events.matching import compile_triggers, matching
from namel3ss_celery.events.model import Event, EventType
from namel3ss_celery.spec import load_program


def program(**trigger: Any) -> Any:
    base = {"name": "t", "event_type": "custom", "trigger_target": "b"}
    return load_program(
        {"parallel_blocks": [{"name": "b", "steps": [{"target": "x"}]}], "event_triggers": [base | trigger]}
    )


@pytest.mark.parametrize(
    ("trigger", "path", "message"),
    [
        ({"event_type": "sometimes"}, "event_triggers[0].event_type", "unknown event type 'sometimes'"),
        ({"filter_expression": "data.a =="}, "event_triggers[0].filter_expression", "unexpected end"),
        (
            {"execution_mode": "sync", "event_type": "workflow_completed"},
            "event_triggers[0].execution_mode",
            "workflow_completed events are matched inside workers",
        ),
        (
            {"execution_mode": "sync", "trigger_delay": 5},
            "event_triggers[0].execution_mode",
            "give one or the other",
        ),
        (
            {"execution_mode": "sync", "source_config": {"sync_timeout_seconds": 0}},
            "event_triggers[0].source_config.sync_timeout_seconds",
            "more than 0",
        ),
        (
            {"source_config": {"sync_timeout_seconds": 5}},
            "event_triggers[0].source_config.sync_timeout_seconds",
            "this trigger is async",
        ),
        ({"context_mapping": {"who": "data..user"}}, "event_triggers[0].context_mapping.who", "dotted field path"),
        ({"source_config": {"dedupe_key": 3}}, "event_triggers[0].source_config.dedupe_key", "dotted field path"),
    ],
)
def test_a_bad_trigger_fails_the_load_naming_its_field(trigger: dict[str, Any], path: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        compile_triggers(program(**trigger))
    assert info.value.path == path and message in str(info.value)


def test_an_event_matches_its_type_and_filters() -> None:
    (trigger,) = compile_triggers(program(filter_fields={"kind": "a"}, filter_expression="data.n > 1"))
    assert matching([trigger], Event.new(EventType.CUSTOM, "s", {"kind": "a", "n": 2})) == [trigger]
    assert matching([trigger], Event.new(EventType.CUSTOM, "s", {"kind": "a", "n": 1})) == []
    assert matching([trigger], Event.new(EventType.WEBHOOK, "s", {"kind": "a", "n": 2})) == []


def test_context_mapping_and_the_trigger_event_reach_the_run() -> None:
    (trigger,) = compile_triggers(program(context_mapping={"who": "data.user.name", "gone": "data.nothing"}))
    event = Event.new(EventType.CUSTOM, "s", {"user": {"name": "ada"}})
    context = trigger.context(event)
    assert context["who"] == "ada" and "gone" not in context
    assert context["trigger_event"]["event_id"] == event.event_id


@pytest.mark.parametrize(
    ("kind", "data", "message"),
    [
        ("sometimes", {}, "unknown event type 'sometimes'"),
        ("workflow_completed", {}, "announced by namel3ss-celery itself"),
        ("custom", [1, 2], "a mapping of JSON data, not list"),
        ("custom", {"x": object()}, "JSON"),
    ],
)
def test_emit_refuses_bad_events_before_publishing(kind: str, data: Any, message: str) -> None:
    n3 = Namel3ssCelery()
    try:
        with pytest.raises(SpecError, match=message):
            n3.emit(kind, data)
        assert n3.events._store().newest() == "0"  # nothing reached the stream
    finally:
        n3.close()


def handlers_program(**handler: Any) -> Any:
    base = {"name": "h", "event_types": ["custom"], "route_to": "b"}
    return load_program(
        {"parallel_blocks": [{"name": "b", "steps": [{"target": "x"}]}], "event_handlers": [base | handler]}
    )


@pytest.mark.parametrize(
    ("handler", "path", "message"),
    [
        ({"event_types": ["custom", "nope"]}, "event_handlers[0].event_types[1]", "unknown event type 'nope'"),
        ({"route_to": None}, "event_handlers[0].route_to", "give route_to or routing_rules"),
        (
            {"routing_rules": [{"when": "data.a >", "route_to": "b"}]},
            "event_handlers[0].routing_rules[0].when",
            "unexpected end",
        ),
        ({"routing_rules": [{"if": "x", "route_to": "b"}]}, "event_handlers[0].routing_rules[0]", "{when:"),
        ({"retry_policy": {"tries": 3}}, "event_handlers[0].retry_policy", "unknown retry_policy keys ['tries']"),
        (
            {"retry_policy": {"backoff": "random"}},
            "event_handlers[0].retry_policy",
            "backoff one of fixed, exponential",
        ),
    ],
)
def test_a_bad_handler_fails_the_load_naming_its_field(handler: dict[str, Any], path: str, message: str) -> None:
    from namel3ss_celery.events.handlers import compile_handlers

    with pytest.raises(SpecError) as info:
        compile_handlers(handlers_program(**handler))
    assert info.value.path == path and message in str(info.value)


def test_a_handler_routes_by_every_matching_rule_else_route_to() -> None:
    from namel3ss_celery.events.handlers import compile_handlers

    rules = [{"when": "data.n > 1", "route_to": "big"}, {"when": "data.n > 10", "route_to": "huge"}]
    (handler,) = compile_handlers(handlers_program(routing_rules=rules, route_to="b"))
    assert handler.targets({"data": {"n": 50}}) == ["big", "huge"]
    assert handler.targets({"data": {"n": 0}}) == ["b"]
    assert [handler.delay(n) for n in range(3)] == [1.0, 2.0, 4.0]  # exponential from retry_delay 1s


@pytest.mark.parametrize(
    ("kinds", "expected"),
    [
        ("task_completed", {EventType.TASK_COMPLETED}),  # one type alone, as the Namel3ss guides write it
        (EventType.CUSTOM, {EventType.CUSTOM}),
        (["task_failed", EventType.USER_INPUT], {EventType.TASK_FAILED, EventType.USER_INPUT}),
    ],
)
def test_handler_event_types_are_a_list_or_one_type(kinds: Any, expected: set[EventType]) -> None:
    from namel3ss_celery.events.buses import parse_types

    assert parse_types(kinds) == expected


@pytest.mark.parametrize(
    ("section", "fields", "path"),
    [
        ("event_triggers", {"required_capabilities": ["gpu"]}, "event_triggers[0].required_capabilities"),
        ("event_triggers", {"permission_level": "admin"}, "event_triggers[0].permission_level"),
        ("event_triggers", {"source_config": {"dataset": "customers"}}, "event_triggers[0].source_config.dataset"),
        ("event_handlers", {"enrichment_sources": ["crm"]}, "event_handlers[0].enrichment_sources"),
        ("event_handlers", {"required_capabilities": ["gpu"]}, "event_handlers[0].required_capabilities"),
        ("event_handlers", {"permission_level": "execute"}, "event_handlers[0].permission_level"),
    ],
)
def test_a_field_this_release_does_not_act_on_is_refused_naming_it(
    section: str, fields: dict[str, Any], path: str
) -> None:
    """As a block's unbuilt fields are: set to other than the IR default, the program does not load."""
    from namel3ss_celery.errors import NotSupportedYet
    from namel3ss_celery.events.matching import check_triggers

    loaded = (program if section == "event_triggers" else handlers_program)(**fields)
    with pytest.raises(NotSupportedYet) as info:
        check_triggers(loaded)
    assert info.value.path == path and "not supported yet" in str(info.value)
    n3 = Namel3ssCelery()
    try:
        with pytest.raises(NotSupportedYet):
            n3.events.use_program(loaded)
    finally:
        n3.close()


def test_the_fields_a_trigger_or_handler_has_by_default_and_its_notes_load() -> None:
    from namel3ss_celery.events.matching import check_triggers

    notes = {"description": "why", "metadata": {"owner": "ops"}}
    defaults = {"required_capabilities": [], "permission_level": "read_only"}
    check_triggers(program(**notes, **defaults))
    check_triggers(handlers_program(**notes, **defaults, enrichment_sources=[]))
