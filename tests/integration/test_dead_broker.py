"""A broker that cannot be reached is ``dispatch``'s error: clear, naming the URL without its password, with
nothing published and nothing recorded (not a run that fails later, nor a web view answering 202)."""

from __future__ import annotations

import os
import subprocess
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest

from namel3ss_celery import BrokerUnavailable, Namel3ssCelery, Settings

from .workers import CLI, REPO, free_port

pytestmark = pytest.mark.integration


def with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    user = parts.username or "guest"
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{parts.hostname}:{parts.port or 5672}"))


def with_user(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{parts.hostname}:{parts.port or 6379}"))


def brokers(amqp_url: str, redis_url: str) -> dict[str, str]:
    return {
        "redis, nothing listening": f"redis://:sekrit-word@127.0.0.1:{free_port()}/0",
        # The test server, as a user it does not have (Redis ACL): refused as a wrong password is.
        "redis, wrong credentials": with_user(redis_url, f"n3-nobody-{uuid.uuid4().hex[:6]}", "sekrit-word"),
        "rabbitmq, nothing listening": f"amqp://guest:sekrit-word@127.0.0.1:{free_port()}//",
        "rabbitmq, wrong password": with_password(amqp_url, "sekrit-word"),
    }


@pytest.mark.parametrize(
    "case",
    ["redis, nothing listening", "redis, wrong credentials", "rabbitmq, nothing listening", "rabbitmq, wrong password"],
)
def test_dispatch_raises_and_records_nothing(case: str, redis_url: str, amqp_url: str) -> None:
    broker = brokers(amqp_url, redis_url)[case]
    n3 = Namel3ssCelery(
        settings=Settings.from_mapping({"CELERY_BROKER_URL": broker, "CELERY_RESULT_BACKEND": redis_url})
    )
    n3.step("noop")(lambda step, context: None)
    run_id = uuid.uuid4().hex
    try:
        for steps in (2, 20):  # a small run (published by dispatch) and a large one (a launch message)
            plan = n3.plan({"name": "b", "steps": [{"target": "noop"}] * steps})
            with pytest.raises(BrokerUnavailable) as info:
                n3.publish(plan, run_id=run_id)
            assert "cannot reach the broker" in str(info.value) and "nothing was published or recorded" in str(
                info.value
            )
            assert "sekrit-word" not in str(info.value) and info.value.broker.startswith(broker.split(":")[0])
            assert n3.store.run_record(run_id) is None
    finally:
        n3.close()


def test_the_cli_says_so_and_exits_2(amqp_url: str, redis_url: str) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "NAMEL3SS_CELERY_"))}
    broker = brokers(amqp_url, redis_url)["rabbitmq, wrong password"]
    ran = subprocess.run(
        [CLI, "run", "examples/pipeline.yaml", "--steps", "examples.steps", "--broker", broker, "--backend", redis_url],
        cwd=REPO,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 2, ran.stdout + ran.stderr
    assert "error: cannot reach the broker amqp://guest:**@" in ran.stderr and "ACCESS_REFUSED" in ran.stderr
    assert "sekrit-word" not in ran.stderr and "Traceback" not in ran.stderr
