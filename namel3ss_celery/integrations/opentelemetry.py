"""OpenTelemetry for a Celery app with namel3ss-celery (the ``otel`` extra:
``pip install 'namel3ss-celery[otel]'`` brings opentelemetry-instrumentation-celery, the SDK and the OTLP
exporter over HTTP).

``instrument(app)`` wires ``CeleryInstrumentor`` (opentelemetry-instrumentation-celery) for the producer,
here, and in every worker process after it starts (``worker_process_init``, as the OpenTelemetry
documentation tells Celery users), so a trace goes from the process that dispatched, through each task's
headers, to every worker; namel3ss-celery's own spans (``tracing``) sit inside. The SDK is yours to set
up, in the web process and, for prefork workers, in ``worker_process_init`` too (a ``BatchSpanProcessor``
starts a thread, which must not be forked)::

    from celery.signals import worker_process_init
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from namel3ss_celery.integrations.opentelemetry import instrument

    def setup_tracing(**_):
        resource = Resource.create({"service.name": "reports", "deployment.environment": "production"})
        provider = TracerProvider(resource=resource)
        exporter = OTLPSpanExporter(endpoint="http://collector:4318/v1/traces")
        provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(provider)

    worker_process_init.connect(setup_tracing, weak=False)   # each prefork child
    setup_tracing()                                         # this process (web, or a threads worker)
    instrument(app)

Without ``endpoint``, the exporter reads ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_ENDPOINT`` (default ``http://localhost:4318``), and ``Resource.create`` adds
``OTEL_RESOURCE_ATTRIBUTES`` and ``OTEL_SERVICE_NAME``.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import worker_process_init

from ..errors import ConfigurationError


def instrument(app: Celery) -> None:
    """Instrument Celery for ``app``'s processes: this one now, each worker process as it starts.

    Raises:
        ConfigurationError: opentelemetry-instrumentation-celery is not installed (the ``otel`` extra).
    """
    try:
        from opentelemetry.instrumentation.celery import CeleryInstrumentor
    except ImportError as exc:
        raise ConfigurationError(
            "instrument() needs opentelemetry-instrumentation-celery: pip install 'namel3ss-celery[otel]'",
            setting="otel",
        ) from exc

    def instrument_here(**_: Any) -> None:
        instrumentor = CeleryInstrumentor()  # type: ignore[no-untyped-call]
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument()

    instrument_here()
    worker_process_init.connect(instrument_here, weak=False, dispatch_uid="namel3ss_celery.opentelemetry")
