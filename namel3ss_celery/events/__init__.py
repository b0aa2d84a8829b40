"""Namel3ss events: the model (``model``), a durable stream per deployment (``stream``), trigger filters
(``filters``), trigger matching and firing on workers (``matching``, ``firing``), and what the adapter
announces of its own runs (``lifecycle``)."""
