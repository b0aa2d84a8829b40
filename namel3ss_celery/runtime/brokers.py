"""The message brokers of ``namel3ss.runtime.distributed``, each a Celery app on its transport.

``MemoryMessageBroker`` is the embedded default (Celery's memory transport, workers in this process);
``RedisMessageBroker`` and ``RabbitMQMessageBroker`` are Celery broker URLs, served by workers in this
process (``consume_tasks``) or by ``celery -A namel3ss_celery worker -Q <queue>`` anywhere. Results go to
Celery's result backend: the memory cache, the Redis of ``redis_url``, or ``result_backend``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any

from celery import Celery
from celery.result import AsyncResult
from kombu.exceptions import ChannelError

from ..apps import check_broker, make_app
from ..errors import BrokerNotConnected, ConfigurationError, UnknownBrokerType
from ..settings import Settings
from ..worker.embedded import EmbeddedWorker
from ..worker.pools import use_all_redis_priorities
from .capabilities import task_queue, worker_queues
from .distributed_model import BrokerType, DistributedTask, TaskStatus, encode_task
from .queue_task import QUEUE_TASK, Receipts, TaskHandler, register_queue_task

logger = logging.getLogger("namel3ss_celery")


class MessageBroker(ABC):
    """Where a distributed queue's tasks travel (Namel3ss ``MessageBroker``), as a Celery app.

    Subclasses say which Celery broker and result backend; publishing, consuming (a Celery worker in this
    process), results and queue sizes are Celery's, the same on every transport.
    """

    broker_type: BrokerType

    def __init__(self) -> None:
        self.connected = False
        self._app: Celery | None = None
        self._handlers: dict[str, TaskHandler] = {}  # worker hostname: the handler of a worker in this process
        self._workers: dict[str, EmbeddedWorker] = {}  # worker id: the Celery worker consuming for it
        self._receipts: Receipts | None = None

    @abstractmethod
    def settings(self) -> Settings:
        """The Celery broker and result backend of this broker."""

    @property
    def app(self) -> Celery:
        """The Celery app tasks are published with (made on first use, with ``n3.queue.task`` registered)."""
        if self._app is None:
            app = make_app(self.settings())
            app.conf.update(task_track_started=True)
            use_all_redis_priorities(app)  # the priority lists that workers of the default app consume
            self._receipts = Receipts(app)
            register_queue_task(app, self._handlers, Settings.from_env().step_modules, self._receipts)
            self._app = app
        return self._app

    async def connect(self) -> None:
        """Make sure the broker answers.

        Raises:
            BrokerUnavailable: it does not (the URL is named, without its password).
        """
        if self.broker_type is not BrokerType.MEMORY:
            await asyncio.to_thread(check_broker, self.app)
        self.connected = True

    async def disconnect(self) -> None:
        """Stop the workers started here and close the app's connections."""
        workers, self._workers = list(self._workers.values()), {}
        for worker in workers:
            await asyncio.to_thread(worker.stop)
        self._handlers.clear()
        if self._app is not None:
            self._app.close()
        self.connected = False

    def _check(self) -> Celery:
        if not self.connected:
            raise BrokerNotConnected(f"the {self.broker_type.value} broker is not connected: call connect() first")
        return self.app

    async def publish_task(self, queue_name: str, task: DistributedTask) -> None:
        """Publish ``task`` as the Celery task ``n3.queue.task`` on the queue ``queue_name``, or, when it
        requires a capability (``task.metadata["required_capability"]``), on ``<queue_name>.cap.<capability>``.

        Raises:
            BrokerNotConnected: ``connect()`` was not called.
            InvalidArgument: the required capability is not one capability (nothing is published).
        """
        app = self._check()
        await asyncio.to_thread(
            app.send_task,
            QUEUE_TASK,
            args=[encode_task(task, queue_name)],
            task_id=task.task_id,
            queue=task_queue(queue_name, task.metadata),
            priority=task.priority,
        )

    async def consume_tasks(
        self,
        queue_name: str,
        callback: TaskHandler,
        *,
        worker_id: str | None = None,
        concurrency: int = 1,
        capabilities: Iterable[str] = (),
    ) -> None:
        """Serve ``queue_name`` with a Celery worker in this process that hands each task to ``callback``.

        Args:
            queue_name: the queue to consume.
            callback: ``(DistributedTask) -> result``, sync or ``async def``.
            worker_id: the worker's name (``worker_id@host``); by default one made from the queue's.
            concurrency: tasks at once (threads).
            capabilities: the worker also consumes ``<queue_name>.cap.<capability>`` for each of them.

        Raises:
            InvalidArgument: one of ``capabilities`` cannot name a queue.
            ConfigurationError: the worker did not start.
        """
        app = self._check()
        name = worker_id or f"{queue_name}-{os.getpid()}"
        queues = worker_queues(queue_name, capabilities)
        hostname = self.worker_hostname(name)
        self._handlers[hostname] = callback
        worker = EmbeddedWorker(app, concurrency, hostname=hostname, queues=queues)
        await asyncio.to_thread(worker.start)
        self._workers[name] = worker

    @staticmethod
    def worker_hostname(worker_id: str) -> str:
        """The Celery node name of a worker started here: ``worker_id@host``."""
        return f"{worker_id}@{socket.gethostname()}"

    async def publish_result(self, result_queue: str, task: DistributedTask) -> None:
        """Store ``task``'s outcome in the result backend under its id, as a worker would."""
        app = self._check()
        if task.status is TaskStatus.COMPLETED:
            value: Any = {"result": task.result, "worker_id": task.worker_id, "completed_at": task.completed_at}
            state = "SUCCESS"
        else:
            value, state = RuntimeError(task.error or task.status.value), "FAILURE"
        await asyncio.to_thread(app.backend.store_result, task.task_id, value, state)

    async def get_queue_size(self, queue_name: str) -> int:
        """Messages waiting in ``queue_name`` (0 when the broker has no such queue)."""
        return await asyncio.to_thread(self._queue_size, self._check(), queue_name)

    @staticmethod
    def _queue_size(app: Celery, queue_name: str) -> int:
        with app.connection_for_read() as connection:
            try:
                declared = connection.default_channel.queue_declare(queue=queue_name, passive=True)
            except (ChannelError, *connection.channel_errors):
                return 0
            return int(declared.message_count)


class MemoryMessageBroker(MessageBroker):
    """The embedded default: Celery's memory transport, with workers in this process (``consume_tasks``)."""

    broker_type = BrokerType.MEMORY

    def settings(self) -> Settings:
        return Settings()


class RedisMessageBroker(MessageBroker):
    """Redis as the Celery broker and result backend.

    Args:
        redis_url: the Redis URL (also the result backend unless ``result_backend`` is given).
        result_backend: another Celery result backend.
    """

    broker_type = BrokerType.REDIS

    def __init__(self, redis_url: str = "redis://localhost:6379", result_backend: str | None = None) -> None:
        super().__init__()
        self.redis_url = redis_url
        self.result_backend = result_backend

    def settings(self) -> Settings:
        return Settings(broker_url=self.redis_url, result_backend=self.result_backend or self.redis_url)


class RabbitMQMessageBroker(MessageBroker):
    """RabbitMQ as the Celery broker, with a result backend of its own (RabbitMQ keeps no results).

    Args:
        amqp_url: the AMQP URL.
        result_backend: a Celery result backend that other processes can read (a ``redis://`` URL).
        redis_url: a Redis for results, when ``result_backend`` is not given.

    Raises:
        ConfigurationError: neither ``result_backend`` nor ``redis_url`` is given.
    """

    broker_type = BrokerType.RABBITMQ

    def __init__(
        self, amqp_url: str = "amqp://localhost", result_backend: str | None = None, redis_url: str | None = None
    ) -> None:
        super().__init__()
        self.amqp_url = amqp_url
        self.result_backend = result_backend or redis_url or os.environ.get("CELERY_RESULT_BACKEND")
        if not self.result_backend:
            raise ConfigurationError(
                "RabbitMQMessageBroker needs a result backend for task results: pass result_backend= or "
                "redis_url= (or set CELERY_RESULT_BACKEND)",
                "result_backend",
            )

    def settings(self) -> Settings:
        return Settings(broker_url=self.amqp_url, result_backend=self.result_backend)


POLL_SECONDS = 0.02  # between reads of a task's state in the result backend, while waiting for its end


def wait_ready(result: AsyncResult, limit: float) -> bool:
    """Whether the task ended within ``limit`` seconds (its state read from the backend until then)."""
    deadline = time.monotonic() + limit
    while not result.ready():
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_SECONDS)
    return True


def create_message_broker(broker_type: str | BrokerType, **kwargs: Any) -> MessageBroker:
    """A broker of ``broker_type`` (``redis``, ``rabbitmq`` or ``memory``, any case).

    Keyword arguments: ``redis_url`` (redis; default ``redis://localhost:6379``), ``amqp_url`` (rabbitmq;
    default ``amqp://localhost``), ``result_backend`` (redis, rabbitmq; rabbitmq also takes ``redis_url``).

    Raises:
        UnknownBrokerType: another broker type.
        ConfigurationError: rabbitmq without a result backend.
    """
    kind = broker_type.value if isinstance(broker_type, BrokerType) else str(broker_type).lower()
    if kind == BrokerType.REDIS.value:
        return RedisMessageBroker(kwargs.get("redis_url", "redis://localhost:6379"), kwargs.get("result_backend"))
    if kind == BrokerType.RABBITMQ.value:
        return RabbitMQMessageBroker(
            kwargs.get("amqp_url", "amqp://localhost"), kwargs.get("result_backend"), kwargs.get("redis_url")
        )
    if kind == BrokerType.MEMORY.value:
        return MemoryMessageBroker()
    raise UnknownBrokerType(broker_type)


def broker_settings(broker_type: str, broker_config: Mapping[str, Any] | None) -> Settings:
    """Settings for a Namel3ss ``broker_type`` and ``broker_config`` (step modules and the program from the
    environment).

    Raises:
        UnknownBrokerType: not redis, rabbitmq or memory (also a ``ConfigurationError``).
        ConfigurationError: a URL the broker type needs is missing.
    """
    config = dict(broker_config or {})
    env = Settings.from_env()
    redis_url = config.get("redis_url") or os.environ.get("CELERY_RESULT_BACKEND")
    if broker_type == "redis":
        broker = config.get("redis_url") or env.broker_url
        if not broker:
            raise ConfigurationError("broker_type 'redis' needs broker_config['redis_url']", setting="redis_url")
    elif broker_type == "rabbitmq":
        broker = config.get("amqp_url")
        if not broker:
            raise ConfigurationError("broker_type 'rabbitmq' needs broker_config['amqp_url']", setting="amqp_url")
        if not (config.get("result_backend") or redis_url):
            raise ConfigurationError(
                "broker_type 'rabbitmq' needs a Redis for results: broker_config['redis_url']", setting="redis_url"
            )
    elif broker_type == "memory":
        broker = None
    else:
        raise UnknownBrokerType(broker_type)
    return Settings(
        broker_url=broker,
        result_backend=(config.get("result_backend") or redis_url) if broker else None,
        step_modules=env.step_modules,
        coordination_url=env.coordination_url,
    )
