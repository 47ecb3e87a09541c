"""Budgets per sender and source: occurrences per clock minute and per clock hour.

One noisy service must not starve the others: each ``(sender, source)`` pair has its own
budget of occurrences (error records the bridge would store) per minute and per hour.
Occurrences beyond it are refused (OTLP partial success, ``quota_exceeded``), the rest of
the request is written; a request none of whose occurrences fit is answered 429 +
``Retry-After`` (gRPC ``RESOURCE_EXHAUSTED`` + ``RetryInfo``). A sender whose every source
is exhausted is refused before its body is read (possible when its grant names its
sources, i.e. has no ``*``).

Windows are clock-aligned (minute ``floor(t / 60)``, hour ``floor(t / 3600)``), so the
``Retry-After`` is exactly the time until the window that blocks turns.

The budget is one for all the workers and replicas of a bridge: a :class:`Ledger` counts
it (:class:`PostgresLedger`: the table ``ops.bridge_quota``, on the database's clock).
A worker does not ask the ledger per request: it takes a *slice* of the budget
(a sixteenth of it, less near the limit) and spends it in memory, so the ledger is asked
about once per slice, and what is accepted never exceeds the budget. Only what is
accepted is charged: a write that does not commit gives its charge back to the slice,
and a slice its worker could not spend before its minute turned goes back to the hour.
:class:`LocalLedger` keeps the count in the process (tests and tools).
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import psycopg2

from ipai_ops import store
from ipai_ops.text import redacted_first_line

log = logging.getLogger(__name__)

#: (sender, source) pairs tracked per worker; beyond it the least recently used is forgotten
#: (its unspent slice with it: the budget is never exceeded, at worst under-used).
MAX_KEYS = 4096
#: A slice is this fraction of the tightest budget (at least one occurrence).
SLICE_FRACTION = 16
#: A hung PostgreSQL must not pin a request: the sender retries instead.
STATEMENT_TIMEOUT_MS = 5_000
CONNECT_TIMEOUT_S = 3

Key = tuple[str, str]


@dataclass(frozen=True)
class Grant:
    """What a ledger granted, and the windows it was granted in."""

    granted: int
    minute_left: float  # seconds until the minute of the grant turns
    hour_left: float
    minute_full: bool  # no room left in that minute after the grant
    hour_full: bool
    hour_id: int  # the hour of the grant (to give back a slice not spent in time)


class Ledger(Protocol):
    def take(
        self, key: Key, *, want: int, slice_: int, per_minute: int, per_hour: int, unspent: int, unspent_hour: int
    ) -> Grant:
        """Grant at most ``max(want, slice_)`` occurrences of ``key``'s budget (fewer when
        there is less room); ``unspent`` occurrences of a slice of hour ``unspent_hour``
        go back to that hour."""


class QuotaUnavailable(Exception):
    """The ledger could not be asked (its database is down): the sender retries later."""


class LocalLedger:
    """The budget of one process, on ``clock`` (seconds since the epoch)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._counts: OrderedDict[Key, list[int]] = OrderedDict()  # minute, in_minute, hour, in_hour

    def take(
        self, key: Key, *, want: int, slice_: int, per_minute: int, per_hour: int, unspent: int, unspent_hour: int
    ) -> Grant:
        now = self._clock()
        minute, hour = int(now // 60), int(now // 3600)
        counts = self._counts.get(key)
        if counts is None:
            counts = self._counts[key] = [minute, 0, hour, 0]
            while len(self._counts) > MAX_KEYS:
                self._counts.popitem(last=False)
        else:
            self._counts.move_to_end(key)
        used_m = counts[1] if counts[0] == minute else 0
        used_h = counts[3] if counts[2] == hour else 0
        if unspent > 0 and unspent_hour == hour:
            used_h = max(used_h - unspent, 0)
        granted = _granted(want, slice_, per_minute=per_minute, per_hour=per_hour, used_m=used_m, used_h=used_h)
        counts[:] = [minute, used_m + granted, hour, used_h + granted]
        return Grant(
            granted,
            (minute + 1) * 60 - now,
            (hour + 1) * 3600 - now,
            bool(per_minute) and used_m + granted >= per_minute,
            bool(per_hour) and used_h + granted >= per_hour,
            hour,
        )


def _granted(want: int, slice_: int, *, per_minute: int, per_hour: int, used_m: int, used_h: int) -> int:
    """ops.bridge_quota_take's rule (migration 0014): a slice while there is room, a quarter
    of what is left near the limit, at least ``want``, never more than the room."""
    room = min(per_minute - used_m if per_minute else 1 << 31, per_hour - used_h if per_hour else 1 << 31)
    return max(min(room, max(want, min(slice_, math.ceil(room / 4)))), 0)


class PostgresLedger:
    """The budget of every worker and replica sharing ``dsn`` (``ops.bridge_quota``).

    One connection, asked by one thread at a time (slices make that rare); reconnected
    after any failure. The database's clock decides the windows, so workers on machines
    whose clocks differ still share one minute.
    """

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conn: store.Connection | None = None
        self._lock = threading.Lock()
        self._sql = store.query("bridge_quota_take")

    def _connection(self) -> store.Connection:
        if self._conn is None or self._conn.closed:
            conn = store.connect(self.dsn, application_name="ipai-bridge-quota", connect_timeout=CONNECT_TIMEOUT_S)
            conn.autocommit = True  # one statement per grant: its own transaction
            with conn.cursor() as cur:
                cur.execute("SET statement_timeout = %s", (STATEMENT_TIMEOUT_MS,))
                # A grant need not wait for its WAL flush (3.2 ms -> 0.7 ms a grant on the test machine): a
                # database crash could forget the last grants of a window, which lets a
                # sender write a little more in that window, never loses data.
                cur.execute("SET synchronous_commit = off")
            self._conn = conn
        return self._conn

    def take(
        self, key: Key, *, want: int, slice_: int, per_minute: int, per_hour: int, unspent: int, unspent_hour: int
    ) -> Grant:
        params = {
            "sender": key[0],
            "source": key[1],
            "want": want,
            "slice": slice_,
            "per_minute": per_minute,
            "per_hour": per_hour,
            "unspent": unspent,
            "unspent_hour": unspent_hour,
        }
        with self._lock:
            try:
                with self._connection().cursor() as cur:
                    cur.execute(self._sql, params)
                    row = cur.fetchone()
            except (store.OpsDatabaseUnavailable, psycopg2.Error) as exc:
                # Data is never the cause here (the key and counts are ours): whatever
                # failed, the ledger cannot answer now, and the sender retries.
                self.close_locked()
                raise QuotaUnavailable(redacted_first_line(exc)) from exc
        granted, minute_left, hour_left, minute_full, hour_full, hour_id = row
        return Grant(granted, minute_left, hour_left, minute_full, hour_full, hour_id)

    def close_locked(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg2.Error):
                conn.close()

    def close(self) -> None:
        with self._lock:
            self.close_locked()


@dataclass
class _Slice:
    left: int = 0  # occurrences granted and not spent
    expires: float = 0.0  # clock() when the minute it was granted in turns
    hour_id: int = -1
    blocked_until: float = 0.0  # the ledger said "no room" until then (clock())


class Quota:
    """``per_minute`` / ``per_hour`` occurrences per (sender, source); 0 = no limit.

    ``take`` may ask the ledger (a database round trip): call it off the event loop.
    ``give_back``, ``retry_after`` and ``exhausted`` never do.
    """

    def __init__(
        self,
        per_minute: int = 0,
        per_hour: int = 0,
        *,
        ledger: Ledger | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.per_minute = per_minute
        self.per_hour = per_hour
        self._clock = clock
        self.ledger: Ledger = ledger if ledger is not None else LocalLedger(clock)
        tightest = min(limit for limit in (per_minute, per_hour, 1 << 31) if limit)
        self.slice = max(1, tightest // SLICE_FRACTION)
        self._slices: OrderedDict[Key, _Slice] = OrderedDict()
        self._state = threading.Lock()  # held briefly, never across a ledger call
        self._asking = threading.Lock()  # one ledger call at a time per worker

    @property
    def enabled(self) -> bool:
        return bool(self.per_minute or self.per_hour)

    def _slice_of(self, key: Key) -> _Slice:
        held = self._slices.get(key)
        if held is None:
            held = self._slices[key] = _Slice()
            while len(self._slices) > MAX_KEYS:
                self._slices.popitem(last=False)
        else:
            self._slices.move_to_end(key)
        return held

    def _spend(self, key: Key, wanted: int, now: float) -> tuple[int, int, int]:
        """Spend from the slice held; (spent, unspent of an expired slice, its hour)."""
        held = self._slice_of(key)
        unspent, unspent_hour = 0, -1
        if held.left and now >= held.expires:
            unspent, unspent_hour, held.left = held.left, held.hour_id, 0
        spent = min(wanted, held.left)
        held.left -= spent
        return spent, unspent, unspent_hour

    def take(self, key: Key, wanted: int) -> int:
        """Charge up to ``wanted`` occurrences to ``key``; how many fit.

        Raises :class:`QuotaUnavailable` when the ledger had to be asked and could not be.
        """
        if not self.enabled or wanted <= 0:
            return max(wanted, 0)
        with self._state:
            now = self._clock()
            spent, unspent, unspent_hour = self._spend(key, wanted, now)
            if spent == wanted or now < self._slice_of(key).blocked_until:
                return spent
        with self._asking:
            with self._state:  # another thread may have taken a slice meanwhile
                now = self._clock()
                more, unspent_too, hour_too = self._spend(key, wanted - spent, now)
                spent += more
                if unspent_too:
                    unspent, unspent_hour = unspent + unspent_too, hour_too
                if spent == wanted or now < self._slice_of(key).blocked_until:
                    return spent
            try:
                grant = self.ledger.take(
                    key,
                    want=wanted - spent,
                    slice_=self.slice,
                    per_minute=self.per_minute,
                    per_hour=self.per_hour,
                    unspent=unspent,
                    unspent_hour=unspent_hour,
                )
            except QuotaUnavailable:
                with self._state:
                    self._slice_of(key).left += spent  # nothing was charged
                raise
            with self._state:
                now = self._clock()
                held = self._slice_of(key)
                used = min(grant.granted, wanted - spent)
                if now >= held.expires:
                    held.left = 0  # given back meanwhile to a minute that has turned: dropped
                held.left += grant.granted - used  # give_back may have added meanwhile
                held.expires = now + grant.minute_left
                held.hour_id = grant.hour_id
                if grant.hour_full or grant.minute_full:
                    held.blocked_until = now + (grant.hour_left if grant.hour_full else grant.minute_left)
                return spent + used

    def give_back(self, key: Key, count: int) -> None:
        """Occurrences charged but not stored (the write did not commit, or a record was refused)."""
        if count <= 0 or not self.enabled:
            return
        with self._state:
            held = self._slices.get(key)
            if held is not None and self._clock() < held.expires:
                held.left += count
                held.blocked_until = 0.0

    def retry_after(self, key: Key) -> int:
        """Whole seconds until ``key`` has room again, as far as this worker knows (0: it may have)."""
        if not self.enabled:
            return 0
        with self._state:
            held = self._slices.get(key)
            if held is None or held.left:
                return 0
            wait = held.blocked_until - self._clock()
        return max(1, math.ceil(wait)) if wait > 0 else 0

    def exhausted(self, sender: str, sources: Iterable[str]) -> int:
        """Seconds until one of ``sources`` of ``sender`` has room; 0 when one may have now (or none is given)."""
        waits = [self.retry_after((sender, source)) for source in sources]
        if not waits or min(waits) == 0:
            return 0
        return min(waits)

    def close(self) -> None:
        close = getattr(self.ledger, "close", None)
        if close is not None:
            close()
