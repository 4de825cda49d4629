"""What others committed to a PostgreSQL table, from the notifications its triggers send.

Statement triggers on the table (see :func:`trigger_sql`) call ``pg_notify`` in the writing
transaction, so a notification leaves at commit and never for a rolled-back write; its
payload is the changed ids (or ``*`` for many). A :class:`NotifyFeed` listens on a
connection of its own, on a daemon thread with its own event loop: notifications arrive
whatever the caller's loops are doing (a notebook cell blocked in ``.sync``, a busy loop).
"""

# SQL text here only interpolates quoted identifiers and constants; values are bound.
# ruff: noqa: S608

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import threading
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from ..stores import Changed, ChangeFeed
from ._sql import quote as quote_ident

MANY = "*"
"""The payload of a statement that changed more rows than a payload holds."""
MAX_IDS = 50  # 50 ids of at most 120 characters stay under the 8000-byte payload limit
TRIGGERS = ("insert", "update", "delete", "truncate")
_RETRY = (0.05, 0.2, 1.0, 2.0)


def channel(schema: str, table: str) -> str:
    """The notification channel of ``schema.table`` (a short identifier)."""
    digest = hashlib.blake2b(f"{schema}.{table}".encode(), digest_size=8).hexdigest()
    return f"symphony_nb_{digest}"


def trigger_name(event: str) -> str:
    """The name of the trigger that notifies on ``event``."""
    return f"symphony_nb_notify_{event}"


def trigger_sql(schema: str, table: str) -> list[str]:
    """Statements that (re)create the notifying functions and triggers of ``schema.table``."""
    qualified = f"{quote_ident(schema)}.{quote_ident(table)}"
    name = channel(schema, table)
    statements = []
    for rows in ("new_rows", "old_rows"):
        function = f"{quote_ident(schema)}.symphony_nb_notify_{rows}"
        statements.append(
            f"CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "DECLARE n bigint; ids text; BEGIN "
            f"SELECT count(*), string_agg(id, ',') INTO n, ids "
            f"FROM (SELECT id FROM {rows} LIMIT {MAX_IDS + 1}) AS changed; "
            f"IF n > {MAX_IDS} THEN PERFORM pg_notify(TG_ARGV[0], '{MANY}'); "
            "ELSIF n > 0 THEN PERFORM pg_notify(TG_ARGV[0], ids); END IF; "
            "RETURN NULL; END $$"
        )
    statements.append(
        f"CREATE OR REPLACE FUNCTION {quote_ident(schema)}.symphony_nb_notify_all() "
        "RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"PERFORM pg_notify(TG_ARGV[0], '{MANY}'); RETURN NULL; END $$"
    )
    for event, referencing, function in (
        ("insert", "REFERENCING NEW TABLE AS new_rows", "symphony_nb_notify_new_rows"),
        ("update", "REFERENCING NEW TABLE AS new_rows", "symphony_nb_notify_new_rows"),
        ("delete", "REFERENCING OLD TABLE AS old_rows", "symphony_nb_notify_old_rows"),
        ("truncate", "", "symphony_nb_notify_all"),
    ):
        trigger = quote_ident(trigger_name(event))
        statements.append(f"DROP TRIGGER IF EXISTS {trigger} ON {qualified}")
        statements.append(
            f"CREATE TRIGGER {trigger} AFTER {event.upper()} ON {qualified} {referencing} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {quote_ident(schema)}.{function}('{name}')"
        )
    return statements


async def has_triggers(conn: Any, schema: str, table: str) -> bool:
    """Whether ``schema.table`` exists with every notifying trigger."""
    found = await conn.fetchval(
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass($1) AND tgname = ANY($2)",
        f"{quote_ident(schema)}.{quote_ident(table)}",
        [trigger_name(event) for event in TRIGGERS],
    )
    return bool(found == len(TRIGGERS))


Connect = Callable[[], Awaitable[Any]]
_FEEDS: weakref.WeakSet[NotifyFeed] = weakref.WeakSet()


class NotifyFeed(ChangeFeed):
    """The changes of ``schema.table`` as its notifications report them.

    ``connect()`` opens a connection (on the feed's own loop). Until the feed listens and has
    found the triggers in place, and whenever its connection is lost, :meth:`poll` answers
    UNKNOWN, so a cache reads through. :meth:`sync` makes one round trip on the listening
    connection: the server sends the notifications of every commit finished before it ahead
    of the reply, so the next poll reflects them.
    """

    exact = False

    def __init__(self, connect: Connect, schema: str, table: str) -> None:
        self._connect = connect
        self._schema = schema
        self._table = table
        self._channel = channel(schema, table)
        self._lock = threading.Lock()
        self._changed: set[str] = set()
        self._everything = True
        self._ready = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._conn: Any = None
        self._asked = self._covered = 0
        self._ping: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._poked = False
        _FEEDS.add(self)
        with self._lock:
            self._start()  # listening takes a connection's time: begin before the first read

    # ------------------------------------------------------------------ callers' side

    def poll(self) -> Changed | frozenset[str]:
        with self._lock:
            if self._thread is None:
                self._start()
            if not self._ready:
                self._everything = True
                self._poke()
                return Changed.UNKNOWN
            if self._everything:
                self._everything = False
                self._changed.clear()
                return Changed.EVERYTHING
            if not self._changed:
                return Changed.NOTHING
            changed = frozenset(self._changed)
            self._changed.clear()
            return changed

    async def sync(self) -> None:
        loop = self._loop
        if loop is None or not self._ready:
            return  # poll answers UNKNOWN: the read goes to the server anyway
        try:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._round_trip(), loop))
        except Exception:  # the connection was dropped: poll answers UNKNOWN until it is back
            with self._lock:
                self._ready = False

    def close(self) -> None:
        with self._lock:
            thread, loop, stop = self._thread, self._loop, self._stop
            self._thread = self._loop = self._stop = None
            self._ready = False
            self._everything = True
        if thread is None or loop is None or stop is None:
            return
        with contextlib.suppress(RuntimeError):  # its loop already ended
            loop.call_soon_threadsafe(stop.set)
        if thread is not threading.current_thread():
            thread.join(10)

    def _poke(self) -> None:
        """Have the listener look for the triggers now (the read about to go through may
        be the one that makes the table); once until it has looked."""
        if self._poked or self._loop is None or self._wake is None:
            return
        self._poked = True
        with contextlib.suppress(RuntimeError):  # its loop already ended
            self._loop.call_soon_threadsafe(self._wake.set)

    def _forget(self) -> None:
        """In a forked child: the listening thread did not come along; listen afresh."""
        self._lock = threading.Lock()
        self._thread = self._loop = self._stop = self._wake = self._conn = self._ping = None
        self._ready = False
        self._everything = True
        self._poked = False

    def _start(self) -> None:
        loop = asyncio.new_event_loop()
        stop = asyncio.Event()
        self._wake = asyncio.Event()
        thread = threading.Thread(
            target=self._run, args=(loop, stop), name="symphony_nb-pg-listen", daemon=True
        )
        self._thread, self._loop, self._stop = thread, loop, stop
        thread.start()

    # ------------------------------------------------------------------ the listening thread

    def _run(self, loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
        try:
            loop.run_until_complete(self._listen(stop))
        finally:
            loop.close()

    async def _listen(self, stop: asyncio.Event) -> None:
        attempt = 0
        while not stop.is_set():
            lost = asyncio.Event()
            try:
                conn = await self._connect()
            except Exception:
                conn = None
            if conn is not None:
                try:
                    await self._serve(conn, stop, lost)
                    attempt = 0
                except Exception:  # noqa: S110  (lost: poll says UNKNOWN meanwhile)
                    pass
                finally:
                    with self._lock:
                        self._ready = False
                        self._conn = None
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), 5)
            if stop.is_set():
                return
            await _wait_any(stop, _RETRY[min(attempt, len(_RETRY) - 1)])
            attempt += 1

    async def _serve(self, conn: Any, stop: asyncio.Event, lost: asyncio.Event) -> None:
        conn.add_termination_listener(lambda _: lost.set())
        await conn.add_listener(self._channel, self._notified)
        delay = _RETRY[0]
        while not await has_triggers(conn, self._schema, self._table):
            # Not made yet (the first read makes it), or made by a version without them.
            wake = self._wake
            if wake is not None:
                wake.clear()
                self._poked = False
            if await _wait_any(stop, delay, lost, wake):
                return
            delay = min(delay * 2, _RETRY[-1])
        with self._lock:
            self._conn = conn
            self._ready = True
            self._everything = True
        while not (stop.is_set() or lost.is_set()):
            await _wait_any(stop, 3600, lost)

    def _notified(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        with self._lock:
            if payload == MANY or not payload:
                self._everything = True
            else:
                self._changed.update(payload.split(","))

    async def _round_trip(self) -> None:
        self._asked += 1
        ticket = self._asked
        while self._covered < ticket:
            if self._ping is None:
                self._ping = asyncio.get_running_loop().create_task(self._ping_once(self._asked))
            await asyncio.shield(self._ping)

    async def _ping_once(self, upto: int) -> None:
        try:
            conn = self._conn
            if conn is None:
                raise ConnectionError("not listening")
            try:
                await conn.fetchval("SELECT 1")
            except BaseException:
                conn.terminate()  # whatever went wrong, listen afresh on a new connection
                raise
            await asyncio.sleep(0)  # notifications read with the reply are handled first
            self._covered = max(self._covered, upto)
        finally:
            self._ping = None


async def _wait_any(stop: asyncio.Event, timeout: float, *others: asyncio.Event | None) -> bool:
    """Wait until ``stop`` or one of ``others`` is set or ``timeout`` passes; True if stopping."""
    waits = [asyncio.ensure_future(stop.wait())]
    waits += [asyncio.ensure_future(other.wait()) for other in others if other is not None]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
    return stop.is_set()


def _after_fork() -> None:
    for feed in list(_FEEDS):
        feed._forget()


os.register_at_fork(after_in_child=_after_fork)
