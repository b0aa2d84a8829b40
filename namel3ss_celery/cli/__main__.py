"""``python -m namel3ss_celery.cli``: the same as ``namel3ss-celery``."""

from . import main

raise SystemExit(main())
