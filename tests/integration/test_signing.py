"""Message signing with Celery's ``auth`` serializer: signed steps run; an unsigned (tampered) message is refused."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis
from celery import Celery

from tests.waiting import wait_until

from .steps import started_key
from .workers import REPO, WorkerProcess

pytestmark = pytest.mark.integration


def make_key_and_certificate(directory: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: no key to sign with")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(directory / "key.pem")]
        + ["-out", str(directory / "certs" / "cert.pem"), "-days", "1", "-subj", "/CN=namel3ss-celery-test"],
        check=True,
        capture_output=True,
        timeout=60,
    )


def test_signed_steps_run_and_an_unsigned_message_is_refused(redis_url: str, tmp_path: Path) -> None:
    security = tmp_path / "security"
    (security / "certs").mkdir(parents=True)
    make_key_and_certificate(security)
    queue = f"n3signed-{uuid.uuid4().hex[:8]}"
    env = {
        "N3_TEST_BROKER": redis_url,
        "N3_TEST_BACKEND": redis_url,
        "N3_TEST_QUEUE": queue,
        "N3_TEST_SECURITY_DIR": str(security),
        "NAMEL3SS_CELERY_STEP_MODULES": "tests.integration.steps",
    }
    worker = WorkerProcess("tests.integration.signed_app", env, tmp_path, queues=[queue])
    try:
        wait_until(lambda: "ready." in worker.log(), 45, worker.log)
        signed = subprocess.run(
            [sys.executable, "-m", "tests.integration.signed_client"],
            cwd=REPO,
            env={**os.environ, **env, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert signed.returncode == 0, signed.stderr[-3000:]
        assert json.loads(signed.stdout.strip().splitlines()[-1]) == {
            "status": "completed",
            "final": {"s0": 0, "s1": 1, "s2": 2},
        }

        # A message that is not signed (as a forger without the key would send it) never runs.
        tag = uuid.uuid4().hex
        forger = Celery("forger", broker=redis_url, set_as_current=False)
        payload = {"v": 1, "run": "forged", "node": "b", "i": 0, "n": 1, "key": "s", "join": "count"}
        payload.update(step={"target": "patient", "seconds": 0, "tag": tag}, context={})
        forger.send_task("n3.step.patient", args=(payload,), queue=queue, serializer="json")
        wait_until(lambda: "untrusted content" in worker.log(), 30, worker.log)
        client = redis.Redis.from_url(redis_url)
        try:
            assert client.llen(started_key(tag)) == 0
        finally:
            client.close()
        forger.close()
    finally:
        worker.stop()
