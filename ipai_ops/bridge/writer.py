"""Blocking PostgreSQL writes, kept off the event loop in a bounded thread pool.

Each writer thread owns one psycopg2 connection (reconnected after any failure);
``store.write_batch`` writes a request's occurrences in one round trip and returns
only after COMMIT, which is when the sender may be told "success". Before that, the
writer decides which samples are built and stored (:class:`Samples`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import psycopg2
import psycopg2.errors

from ipai_ops import store
from ipai_ops.bridge.extract import SampleDraft
from ipai_ops.store import ErrorOccurrence
from ipai_ops.text import redacted_first_line

log = logging.getLogger(__name__)

#: A hung PostgreSQL must not pin a request forever: the sender retries instead.
STATEMENT_TIMEOUT_MS = 15_000
CONNECT_TIMEOUT_S = 3
READINESS_CACHE_S = 1.0


#: Transactions a batch that PostgreSQL refuses for its data may take to isolate the
#: records at fault (halving): k bad records among n cost about 2 k log2(n).
MAX_ISOLATION_WRITES = 64


class DatabaseUnavailable(Exception):
    """The write did not commit for a reason that retrying later can fix."""


#: Errors about the data of a record (SQLSTATE classes 22 and 23: a numeric overflow, an
#: invalid value, a violated constraint), not about the database: retrying cannot fix them.
_RECORD_ERRORS = (psycopg2.DataError, psycopg2.IntegrityError)


@dataclass
class Written:
    """What one request's write did: the committed totals and the records PostgreSQL refused."""

    received: int = 0
    new_occurrences: int = 0
    errors_touched: int = 0
    #: (occurrence, the database's reason, redacted: it goes back to the sender) of each refused record
    refused: list[tuple[ErrorOccurrence, str]] = field(default_factory=list)

    def add(self, result: store.BatchResult) -> None:
        self.received += result.received
        self.new_occurrences += result.new_occurrences
        self.errors_touched += result.errors_touched


_RETRYABLE_PROGRAMMING = (
    # The ops schema is missing or behind: an operator runs ``ipai-ops db migrate``.
    psycopg2.errors.UndefinedFunction,
    psycopg2.errors.UndefinedTable,
    psycopg2.errors.InvalidSchemaName,
    psycopg2.errors.UndefinedObject,
)


#: Fingerprints whose last sample time :class:`Samples` remembers (per worker).
SAMPLED_FINGERPRINTS = 65536


class Samples:
    """Which occurrences of a batch are written with their sample; the others' drafts are never
    built (classification, redaction and enveloping are most of the cost of an error, so a
    stream of one error pays for one sample a refresh period).

    The rule is the SQL's (``ops.write_occurrences``, migration 0013): of an error's new
    occurrences in a batch it stores the sample of the latest, by ``occurred_at`` and then
    ``occurrence_id``, both descending, and keeps the stored sample when that one brings none.
    So of each fingerprint's occurrences in the batch, one keeps its sample: the greatest
    (``occurred_at``, ``occurrence_id``), the ids compared by code point, the order of a
    ``C`` collation and, for the ids the bridge makes (fixed prefixes, lowercase hex), of
    the usual others too; an error's latest is the latest of one of its fingerprints. A
    fingerprint gets a sample at most once per ``refresh_seconds`` (0: every batch); in
    between, its error keeps the stored one.

    The occurrences are the bridge's, as written: after the sender policy and the budgets
    (an occurrence refused there never takes a fingerprint's turn).
    """

    def __init__(self, refresh_seconds: float = 60.0, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.refresh_seconds = refresh_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._sampled: OrderedDict[str, float] = OrderedDict()

    def thin(self, occurrences: Sequence[ErrorOccurrence]) -> None:
        """Clear ``wanted`` on the drafts whose sample would not be stored or is not due."""
        latest: dict[str, ErrorOccurrence] = {}
        for occ in occurrences:
            if not isinstance(occ.sample, SampleDraft):
                continue
            current = latest.get(occ.fingerprint)
            if current is None or (occ.occurred_at, occ.occurrence_id) > (current.occurred_at, current.occurrence_id):
                latest[occ.fingerprint] = occ
        keep = set()
        now = self._clock()
        with self._lock:
            sampled = self._sampled
            for fingerprint, occ in latest.items():
                last = sampled.get(fingerprint)
                if last is None or now - last >= self.refresh_seconds:
                    keep.add(id(occ))
                    sampled[fingerprint] = now
                    sampled.move_to_end(fingerprint)
            while len(sampled) > SAMPLED_FINGERPRINTS:
                sampled.popitem(last=False)
        for occ in occurrences:
            if isinstance(occ.sample, SampleDraft):
                occ.sample.wanted = id(occ) in keep


class Writer:
    def __init__(self, dsn: str, *, pool_size: int, sample_refresh_seconds: float = 60.0) -> None:
        self.dsn = dsn
        self.samples = Samples(sample_refresh_seconds)
        self._executor = ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix="ipai-bridge-db")
        self._probe = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ipai-bridge-ready")
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[store.Connection] = []
        self._ready: tuple[float, bool, dict[str, Any]] = (0.0, False, {})

    # ----------------------------------------------------------------------- connections

    def _connection(self) -> store.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = store.connect(
                self.dsn,
                application_name="ipai-bridge",
                connect_timeout=CONNECT_TIMEOUT_S,
                statement_timeout_ms=STATEMENT_TIMEOUT_MS,
            )
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _discard(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with self._lock:
                if conn in self._connections:
                    self._connections.remove(conn)
            with contextlib.suppress(psycopg2.Error):
                conn.close()

    # ----------------------------------------------------------------------- writes

    def write_sync(self, occurrences: list[ErrorOccurrence]) -> Written:
        """Write the batch (its samples thinned by :attr:`samples`); when PostgreSQL refuses
        it for a record's data, write the rest.

        A refused batch rolled back as a whole, so its halves are written again, each in its
        own transaction, down to the records at fault (``Written.refused``). Counting stays
        exactly once: occurrences are keyed, and a half that fails commits nothing.
        """
        self.samples.thin(occurrences)
        try:
            return self._isolating(self._connection(), occurrences)
        except _RETRYABLE_PROGRAMMING as exc:
            self._discard()
            reason = redacted_first_line(exc)
            log.error("ops schema is not usable (run `ipai-ops db migrate`): %s", reason)
            raise DatabaseUnavailable(f"ops schema not ready: {reason}") from exc
        except (store.OpsDatabaseUnavailable, psycopg2.Error) as exc:
            down = store.unavailable(exc)
            if down is None:
                raise
            self._discard()
            raise DatabaseUnavailable(str(down)) from exc

    @staticmethod
    def _isolating(conn: store.Connection, occurrences: list[ErrorOccurrence]) -> Written:
        written = Written()
        budget = MAX_ISOLATION_WRITES
        pending = [occurrences]
        while pending:
            batch = pending.pop()
            try:
                written.add(store.write_batch(conn, batch))
            except _RECORD_ERRORS as exc:
                if len(batch) == 1 or budget < 2:
                    reason = redacted_first_line(exc)[:200]
                    written.refused.extend((occ, reason) for occ in batch)
                    continue
                budget -= 2
                middle = len(batch) // 2
                pending += (batch[middle:], batch[:middle])
        return written

    async def write(self, occurrences: list[ErrorOccurrence]) -> Written:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.write_sync, occurrences)

    # ----------------------------------------------------------------------- readiness

    def _readiness_sync(self) -> tuple[bool, dict[str, Any]]:
        """The answer of ``/readyz``. Anyone who reaches the port reads it, so it names no
        database user, host or database: the reason goes to the bridge's log."""
        try:
            conn = store.connect(self.dsn, application_name="ipai-bridge-ready", connect_timeout=CONNECT_TIMEOUT_S)
        except (store.OpsDatabaseUnavailable, store.InvalidDsn) as exc:
            log.warning("readiness: %s", exc)
            return False, {"database": "unreachable"}
        try:
            state = store.status(conn)
            conn.rollback()
        except psycopg2.Error as exc:
            log.warning("readiness: ops database error: %s", redacted_first_line(exc))
            return False, {"database": "error"}
        finally:
            conn.close()
        detail = {"database": "ok", "migrations": {"head": state["head"], "pending": state["pending"]}}
        return bool(state["at_head"]), detail

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Database reachable and migrations at head (cached briefly: probes come often)."""
        checked_at, ok, detail = self._ready
        if time.monotonic() - checked_at < READINESS_CACHE_S:
            return ok, detail
        loop = asyncio.get_running_loop()
        ok, detail = await loop.run_in_executor(self._probe, self._readiness_sync)
        self._ready = (time.monotonic(), ok, detail)
        return ok, detail

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self._probe.shutdown(wait=True)
        with self._lock:
            conns, self._connections = self._connections, []
        for conn in conns:
            with contextlib.suppress(psycopg2.Error):
                conn.close()
