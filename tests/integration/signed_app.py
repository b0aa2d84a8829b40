"""A user's app that signs every message with Celery's ``auth`` serializer, for the signing test.

Configured from N3_TEST_BROKER, N3_TEST_BACKEND, N3_TEST_QUEUE and N3_TEST_SECURITY_DIR (``key.pem``,
and ``certs/cert.pem``, the store of trusted certificates). ``setup_security`` changes kombu's serializers for the whole process: this app lives in
its own processes (a worker, a client), never in the test process.
"""

from __future__ import annotations

import os
from pathlib import Path

from celery import Celery

from namel3ss_celery import Namel3ssCelery

security = Path(os.environ["N3_TEST_SECURITY_DIR"])
app = Celery("signed", broker=os.environ["N3_TEST_BROKER"], backend=os.environ["N3_TEST_BACKEND"], set_as_current=False)
app.conf.update(
    task_serializer="auth",
    accept_content=["auth"],
    result_serializer="json",
    result_accept_content=["json"],
    event_serializer="auth",
    security_key=str(security / "key.pem"),
    security_certificate=str(security / "certs" / "cert.pem"),
    security_cert_store=str(security / "certs" / "*.pem"),
    security_digest="sha256",
    task_default_queue=os.environ["N3_TEST_QUEUE"],
    worker_prefetch_multiplier=1,
)
app.setup_security(allowed_serializers=["json"], serializer="json")  # results stay JSON
n3 = Namel3ssCelery(app)
