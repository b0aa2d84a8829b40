"""The integration tests' app with OpenTelemetry: an SDK whose spans go to a Redis list the test reads
(``N3_TEST_SPANS``), set up in each prefork child (``worker_process_init``) and instrumented with
``integrations.opentelemetry.instrument``: ``celery -A tests.integration.otel_app worker``."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import redis
from celery.signals import worker_process_init
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from namel3ss_celery.integrations.opentelemetry import instrument

from .app import app_from_env


class RedisSpanExporter(SpanExporter):
    """Each finished span as JSON on a Redis list: the test reads what every process exported."""

    def __init__(self, url: str, key: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.key = key

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        rows = [
            json.dumps(
                {
                    "name": s.name,
                    "trace_id": f"{s.context.trace_id:032x}" if s.context else "",
                    "span_id": f"{s.context.span_id:016x}" if s.context else "",
                    "parent_id": f"{s.parent.span_id:016x}" if s.parent else None,
                    "pid": os.getpid(),
                    "attributes": {k: v for k, v in (s.attributes or {}).items()},
                    "events": [e.name for e in s.events],
                }
            )
            for s in spans
        ]
        if rows:
            self.client.rpush(self.key, *rows)
            self.client.expire(self.key, 3600)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.client.close()


def setup_tracing(**_: Any) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": "n3test"}))
    provider.add_span_processor(
        SimpleSpanProcessor(RedisSpanExporter(os.environ["N3_TEST_BACKEND"], os.environ["N3_TEST_SPANS"]))
    )
    trace.set_tracer_provider(provider)
    return provider


if "N3_TEST_BROKER" in os.environ:
    app, n3 = app_from_env()
    worker_process_init.connect(setup_tracing, weak=False)
    instrument(app)
