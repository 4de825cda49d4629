"""Pausing the garbage collector around bulk decoding."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """Disable the cyclic collector inside the block (restored after, if it was enabled)."""
    # Decoding many documents allocates many young objects; the collector's passes over them
    # cost more than the decoding itself (measured: 17.9 -> 7.2 us per Task).
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
