"""The change-feed part of the store contract: how a store tells a cache what others changed.

A store that can tell (a cheap check per read, or notifications from its server) returns a
:class:`ChangeFeed` from :meth:`Store.change_feed <symphony_nb.stores.Store.change_feed>`;
the read cache polls it before every read and drops what it names. Re-exported by
:mod:`symphony_nb.stores`, where a new backend finds it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextvars import ContextVar
from enum import Enum

__all__ = ["ChangeFeed", "Changed", "writing_for"]

writing_for: ContextVar[ChangeFeed | None] = ContextVar("writing_for", default=None)
"""The feed of the cache a write is made through, while it is made (else None).

A store may use it to tell that feed which of the changes it will see next are this
write's own (the cache drops those itself), so they need not empty the whole cache.
"""


class Changed(Enum):
    """What a :class:`ChangeFeed` knows, besides a set of changed ids."""

    NOTHING = "nothing"
    """No document changed since the last poll."""
    EVERYTHING = "everything"
    """Any document may have changed (a commit whose ids are not known, a first poll)."""
    UNKNOWN = "unknown"
    """The feed cannot tell now (not listening yet, connection lost): read from the store.

    Once it can tell again, its next answer covers what happened meanwhile (EVERYTHING)."""


class ChangeFeed(ABC):
    """Tells one reader which documents were changed by anyone else since it last polled.

    :meth:`poll` is called before every cached read, from whichever thread reads, so it must
    be cheap (microseconds) and thread-safe. A feed is *exact* when a poll reflects every
    write committed anywhere before the poll began; otherwise writes made elsewhere show
    after a delay (a notification in flight) unless :meth:`sync` is awaited first.

    Writes made through the cache itself are dropped by the cache; a feed may report them
    too (it need not tell them apart). A feed may be polled again after :meth:`close`: it
    then starts afresh and answers EVERYTHING or UNKNOWN first.
    """

    exact: bool = True
    """Whether :meth:`poll` reflects every write committed before it (no notification delay)."""

    @abstractmethod
    def poll(self) -> Changed | frozenset[str]:
        """What changed since the previous poll: :class:`Changed`, or the ids that changed."""

    async def sync(self) -> None:  # noqa: B027  (an exact feed has nothing to wait for)
        """Return once :meth:`poll` reflects every write committed before this call."""

    def close(self) -> None:  # noqa: B027  (a feed holding nothing keeps it)
        """Release what the feed holds (a connection, a thread, a file)."""
