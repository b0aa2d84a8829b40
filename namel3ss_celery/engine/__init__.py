"""The rules of a run, once: decide, start guard, settle, advance, launch, deadlines, lost workers, cancel.

The ``Conductor`` works through two ports (``ports.py``): a coordination store and a publisher.
"""
