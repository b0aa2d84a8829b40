"""Keep Python's cyclic garbage collector out of a short burst of allocation.

Dispatching a 5000-step block builds tens of thousands of small objects (the
validated steps, the plan) that live until dispatch returns and are then freed
by reference counting: none of them is part of a cycle. While they are alive,
every 700 allocations start a young collection, which moves them to older
generations; enough of them there start a full collection, which walks every
object of the process. In a process the size of a Celery client that walk
took 30 to 45 ms on a 2-core machine, a pause the caller of ``dispatch``
waited for one call in three.

``collection_paused()`` turns automatic collection off for the block it wraps
and back on when that block ends, if it was on when the block began. Collection
is never off for longer than one such block: when two threads overlap, the one
that turned it off turns it on again as it leaves, even while the other is still
inside (which then only loses some of the benefit). Nothing is lost: cyclic
garbage made meanwhile, by any thread, is collected by the next collection.
Wrap only work of the library's own that is short and bounded; user code inside
such a block (a ``fallback_to_local`` step) runs under ``collection_resumed()``.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_state = threading.local()  # .paused: this thread turned collection off


@contextmanager
def collection_paused() -> Iterator[None]:
    """No automatic cyclic garbage collection while the block runs, unless the application turned it off."""
    paused = gc.isenabled()
    if paused:
        gc.disable()
        _state.paused = True
    try:
        yield
    finally:
        if paused:
            _state.paused = False
            gc.enable()


@contextmanager
def collection_resumed() -> Iterator[None]:
    """User code inside a paused block (a step ``fallback_to_local`` runs while ``dispatch`` publishes): collection
    is on again while it runs, if this thread's ``collection_paused`` turned it off."""
    resumed = getattr(_state, "paused", False) and not gc.isenabled()
    if resumed:
        gc.enable()
    try:
        yield
    finally:
        if resumed:
            gc.disable()
