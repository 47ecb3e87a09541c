"""One lazily opened PostgreSQL connection, shared by threads, with hard time bounds.

The middleware writes on a request's error path: a database outage must cost that
request a bounded, short wait at most, and then nothing at all for a while. So:

* ``connect_timeout`` bounds the connect, ``statement_timeout`` the server's work and
  ``tcp_user_timeout`` + keepalives a peer that vanished mid-query;
* after a connection-level failure the connection is dropped and calls fail at once for
  ``retry_interval`` seconds (no connect attempt per failing request during an outage);
  the next call after that reconnects;
* a lock serialises users of the one connection (error paths are rare; a pool would
  hold idle connections in every worker for nothing).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import psycopg2
import psycopg2.extensions

from ipai_ops import store
from ipai_ops.store import OpsDatabaseUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")


class SharedConnection:
    def __init__(
        self,
        dsn: str,
        *,
        application_name: str,
        connect_timeout: int = 2,
        statement_timeout_ms: int = 2000,
        retry_interval: float = 5.0,
    ) -> None:
        # A malformed DSN is a configuration error: say so now (InvalidDsn, a ValueError),
        # not on every error path.
        self.dsn = store.check_dsn(dsn)
        self.application_name = application_name
        # libpq treats connect_timeout=1 as 2 (its documented minimum).
        self.connect_timeout = max(2, int(connect_timeout))
        self.statement_timeout_ms = int(statement_timeout_ms)
        self.retry_interval = float(retry_interval)
        self._lock = threading.Lock()
        self._conn: psycopg2.extensions.connection | None = None
        self._down_until = 0.0

    def _connection(self) -> psycopg2.extensions.connection:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        # The error's text can reach a webhook sender (a 503's details): it names no host,
        # user or database.
        conn = store.connect(
            self.dsn,
            application_name=self.application_name,
            connect_timeout=self.connect_timeout,
            statement_timeout_ms=self.statement_timeout_ms,
            lock_timeout_ms=self.statement_timeout_ms,
            tcp_user_timeout_ms=self.statement_timeout_ms + 1000,
            name_target=False,
        )
        self._conn = conn
        return conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg2.Error):
                conn.close()

    def run(self, work: Callable[[psycopg2.extensions.connection], T]) -> T:
        """``work(conn)`` under the lock; :class:`OpsDatabaseUnavailable` when PostgreSQL is not there.

        Other database errors (a missing table: the ops migrations were not applied) are
        raised as they are, after the connection was rolled back.
        """
        with self._lock:
            if time.monotonic() < self._down_until:
                raise OpsDatabaseUnavailable("ops database unavailable (recent failure; not retrying yet)")
            try:
                return work(self._connection())
            except (OpsDatabaseUnavailable, psycopg2.Error) as exc:
                down = store.unavailable(exc)
                if down is not None:
                    self._drop()
                    self._down_until = time.monotonic() + self.retry_interval
                    if down is exc:
                        raise
                    raise down from None
                if self._conn is not None and not self._conn.closed:
                    try:
                        self._conn.rollback()
                    except psycopg2.Error:
                        self._drop()
                raise

    def close(self) -> None:
        with self._lock:
            self._drop()
