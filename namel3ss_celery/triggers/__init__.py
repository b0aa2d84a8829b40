"""Event triggers: beat schedules, Celery signal events, ``emit``, filters, dedup, rate limits, streaming.

Not built yet: a program's ``event_triggers`` and ``event_handlers`` are refused with ``NotSupportedYet``.
"""
