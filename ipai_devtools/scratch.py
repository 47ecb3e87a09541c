"""Throwaway databases for tests, benchmarks and schema generation.

Created from a maintenance database (``IPAI_TEST_PG``, default
``postgresql://postgres@127.0.0.1:5432/postgres``) and dropped with ``WITH (FORCE)``,
so a crashed run leaves nothing behind that a later one trips on.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2

from ipai_ops import config


def dsn_for(name: str, *, admin: str | None = None) -> str:
    """The DSN of database ``name`` on the maintenance DSN's server (URL form, as the admin DSN)."""
    return config.test_admin_dsn(admin).rpartition("/")[0] + "/" + name


def _admin_execute(sql: str, admin: str | None) -> None:
    conn = psycopg2.connect(config.test_admin_dsn(admin))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def create_database(prefix: str = "ipai_tmp", *, admin: str | None = None) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    _admin_execute(f'CREATE DATABASE "{name}"', admin)
    return name


def drop_database(name: str, *, admin: str | None = None) -> None:
    _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', admin)


@contextmanager
def throwaway_database(prefix: str = "ipai_tmp", *, migrate: bool = False, admin: str | None = None) -> Iterator[str]:
    """A new database's DSN (with the ops schema when ``migrate``), dropped on exit."""
    from ipai_ops import store

    name = create_database(prefix, admin=admin)
    try:
        dsn = dsn_for(name, admin=admin)
        if migrate:
            conn = store.connect(dsn)
            try:
                store.migrate(conn)
            finally:
                conn.close()
        yield dsn
    finally:
        drop_database(name, admin=admin)
