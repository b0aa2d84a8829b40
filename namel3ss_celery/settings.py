"""One settings object, built from a mapping, the environment or a Celery app's config."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import ConfigurationError

EMBEDDED_BROKER = "memory://"
EMBEDDED_BACKEND = "cache+memory://"
DEFAULT_EXPIRES = 86400
DEFAULT_STORE_PATIENCE = 60.0
MATCH_ON_WORKERS = "workers"  # where an emitted event is matched against the triggers: a task on the workers
MATCH_WHERE_EMITTED = "emitter"  # ... or in the emitting process, when it has the program and its steps
MATCH_EVENTS = (MATCH_ON_WORKERS, MATCH_WHERE_EMITTED)

ENV_KEYS = {
    "broker_url": "CELERY_BROKER_URL",
    "result_backend": "CELERY_RESULT_BACKEND",
    "step_modules": "NAMEL3SS_CELERY_STEP_MODULES",
    "program": "NAMEL3SS_CELERY_PROGRAM",
    "coordination_url": "NAMEL3SS_CELERY_COORDINATION_URL",
    "pool": "NAMEL3SS_CELERY_POOL",
    "region": "NAMEL3SS_CELERY_REGION",
    "store_patience": "NAMEL3SS_CELERY_STORE_PATIENCE",
    "match_events": "NAMEL3SS_CELERY_MATCH_EVENTS",
}

REDIS_SCHEMES = ("redis://", "rediss://", "redis+socket://", "unix://")


@dataclass(frozen=True)
class Settings:
    """What namel3ss-celery needs to know about its deployment.

    Attributes:
        broker_url: Celery broker; ``None`` means the embedded default (memory).
        result_backend: Celery result backend.
        step_modules: modules imported at start-up; ``module:function`` targets resolve only among them.
        program: the program file that workers and beat load.
        coordination_url: Redis URL of the coordination store; ``None`` picks one (see ``coordination``).
        pool: the worker pool this process serves (``namel3ss-celery worker --pool``): its
            ``allowed_tools`` are enforced here.
        region: the region this pool worker serves besides its pool's queue (``locality_aware``).
        result_expires: seconds before run records and coordination keys expire.
        store_patience: seconds a worker tries again a call the run cannot do without (starting a step,
            filing its outcome) while the coordination store does not answer; an outcome still not filed
            then is filed by the worker later, when the store answers (``worker.late_filing``).
        match_events: where the events this process emits are matched against the program's triggers:
            ``"workers"`` (the default: a task per event, ``n3.events.match``), or ``"emitter"`` (here, when
            this process has the program and can start its triggers' targets; one hop less to the run).
    """

    broker_url: str | None = None
    result_backend: str | None = None
    step_modules: tuple[str, ...] = ()
    program: str | None = None
    coordination_url: str | None = None
    pool: str | None = None
    region: str | None = None
    result_expires: int = DEFAULT_EXPIRES
    store_patience: float = DEFAULT_STORE_PATIENCE
    match_events: str = MATCH_ON_WORKERS
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Settings:
        """Settings from a mapping keyed by field name or by environment name."""
        values: dict[str, Any] = {}
        for name, env in ENV_KEYS.items():
            value = data.get(name, data.get(env))
            if value not in (None, ""):
                values[name] = value
        if "step_modules" in values:
            values["step_modules"] = split_modules(values["step_modules"])
        if "store_patience" in values:
            values["store_patience"] = _patience(values["store_patience"])
        if "match_events" in values:
            values["match_events"] = _match_events(values["match_events"])
        if data.get("result_expires") is not None:
            values["result_expires"] = int(_seconds(data["result_expires"]))
        return cls(**values)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``CELERY_*`` and ``NAMEL3SS_CELERY_*`` environment variables."""
        return cls.from_mapping(os.environ if environ is None else environ)

    @classmethod
    def from_app(cls, app: Any, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings for an existing Celery app: its broker, backend and expiry, plus the environment.

        ``app.conf.namel3ss_celery`` (a mapping) wins over the environment. With
        ``config_from_object(source, namespace="CELERY")`` (Django), the namespace keeps only
        ``CELERY_*`` keys in ``app.conf``: the source's own ``NAMEL3SS_CELERY`` is read instead.
        """
        conf = app.conf
        own = conf.get("namel3ss_celery") or _namespaced_source_settings(app) or {}
        base = replace(
            cls.from_env(environ),
            broker_url=str(conf.broker_url) if conf.broker_url else None,
            result_backend=str(conf.result_backend) if conf.result_backend else None,
            result_expires=int(_seconds(conf.result_expires)) if conf.result_expires else DEFAULT_EXPIRES,
        )
        return base.overridden(own)

    def overridden(self, data: Mapping[str, Any]) -> Settings:
        """These settings, with each one that ``data`` gives (by field or environment name) in its place; its
        step modules are added before these (broker and backend stay: they are the Celery app's)."""
        given = Settings.from_mapping(data)
        names = {name for name, env in ENV_KEYS.items() if data.get(name, data.get(env)) not in (None, "")}
        changes = {name: getattr(given, name) for name in names - {"broker_url", "result_backend", "step_modules"}}
        return replace(self, step_modules=tuple(dict.fromkeys(given.step_modules + self.step_modules)), **changes)

    @property
    def embedded(self) -> bool:
        """True when no broker is configured, or the broker is the in-memory transport."""
        return self.broker_url is None or self.broker_url.startswith("memory://")

    def coordination(self) -> str:
        """The coordination store: a Redis URL, or ``"memory://"`` for the embedded default.

        Raises:
            ConfigurationError: no Redis is configured and the broker is not in-memory.
        """
        if self.coordination_url:
            return self.coordination_url
        for url in (self.result_backend, self.broker_url):
            if url and url.startswith(REDIS_SCHEMES):
                return url
        if self.embedded:
            return "memory://"
        raise ConfigurationError(
            "namel3ss-celery needs a Redis coordination store for its joins: set "
            "NAMEL3SS_CELERY_COORDINATION_URL (or use a redis:// result backend or broker)",
            setting="NAMEL3SS_CELERY_COORDINATION_URL",
        )

    def with_step_modules(self, modules: tuple[str, ...]) -> Settings:
        return replace(self, step_modules=tuple(dict.fromkeys(self.step_modules + modules)))


def _namespaced_source_settings(app: Any) -> Any:
    """``NAMEL3SS_CELERY`` of the object a namespaced ``config_from_object`` loaded (Django's settings)."""
    if not getattr(app, "namespace", None):
        return None
    return app.loader.conf.get("NAMEL3SS_CELERY")


def split_modules(value: Any) -> tuple[str, ...]:
    """``"a, b"`` or ``["a", "b"]`` -> ``("a", "b")``."""
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(m.strip() for m in items if m and m.strip())


def _seconds(value: Any) -> float:
    total_seconds = getattr(value, "total_seconds", None)
    return float(total_seconds() if total_seconds else value)


def _patience(value: Any) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"store_patience is a number of seconds, not {value!r}", setting="NAMEL3SS_CELERY_STORE_PATIENCE"
        ) from exc
    if not seconds > 0:
        raise ConfigurationError(
            f"store_patience is a positive number of seconds, not {value!r}", setting="NAMEL3SS_CELERY_STORE_PATIENCE"
        )
    return seconds


def _match_events(value: Any) -> str:
    where = str(value).strip().lower()
    if where not in MATCH_EVENTS:
        raise ConfigurationError(
            f"match_events is {' or '.join(repr(m) for m in MATCH_EVENTS)}, not {value!r}",
            setting="NAMEL3SS_CELERY_MATCH_EVENTS",
        )
    return where
