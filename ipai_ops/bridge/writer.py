"""Blocking PostgreSQL writes, kept off the event loop in a bounded thread pool.

Each writer thread owns one psycopg2 connection (reconnected after any failure);
``store.write_batch`` writes a request's occurrences in one round trip and returns
only after COMMIT, which is when the sender may be told "success".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import psycopg2
import psycopg2.errors

from ipai_ops import store
from ipai_ops.envelope import first_line

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
    #: (occurrence, the database's reason) of each refused record
    refused: list[tuple[dict[str, Any], str]] = field(default_factory=list)

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


class Writer:
    def __init__(self, dsn: str, *, pool_size: int) -> None:
        self.dsn = dsn
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
            conn = store.connect(self.dsn, application_name="ipai-bridge", connect_timeout=CONNECT_TIMEOUT_S)
            with conn, conn.cursor() as cur:
                cur.execute("SET statement_timeout = %s", (STATEMENT_TIMEOUT_MS,))
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

    def write_sync(self, occurrences: list[dict[str, Any]]) -> Written:
        """Write the batch; when PostgreSQL refuses it for a record's data, write the rest.

        A refused batch rolled back as a whole, so its halves are written again, each in its
        own transaction, down to the records at fault (``Written.refused``). Counting stays
        exactly once: occurrences are keyed, and a half that fails commits nothing.
        """
        try:
            return self._isolating(self._connection(), occurrences)
        except (store.OpsDatabaseUnavailable, psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            self._discard()
            raise DatabaseUnavailable(first_line(exc)) from exc
        except _RETRYABLE_PROGRAMMING as exc:
            self._discard()
            log.error("ops schema is not usable (run `ipai-ops db migrate`): %s", first_line(exc))
            raise DatabaseUnavailable(f"ops schema not ready: {first_line(exc)}") from exc

    @staticmethod
    def _isolating(conn: store.Connection, occurrences: list[dict[str, Any]]) -> Written:
        written = Written()
        budget = MAX_ISOLATION_WRITES
        pending = [occurrences]
        while pending:
            batch = pending.pop()
            try:
                written.add(store.write_batch(conn, batch))
            except _RECORD_ERRORS as exc:
                if len(batch) == 1 or budget < 2:
                    reason = first_line(exc)[:200]
                    written.refused.extend((occ, reason) for occ in batch)
                    continue
                budget -= 2
                middle = len(batch) // 2
                pending += (batch[middle:], batch[:middle])
        return written

    async def write(self, occurrences: list[dict[str, Any]]) -> Written:
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
            log.warning("readiness: ops database error: %s", first_line(exc))
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
