"""Shared fixtures: throwaway PostgreSQL databases on the real server.

Each fixture creates its own database (``ipai_test_<random>``) and drops it
afterwards. The server is taken from ``IPAI_TEST_PG`` (a libpq DSN of a
maintenance database; default ``postgresql://postgres@127.0.0.1:5432/postgres``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg2
import pytest

from ipai_ops import store

ADMIN_DSN = os.environ.get("IPAI_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def dsn_for(dbname: str) -> str:
    base, _, _ = ADMIN_DSN.rpartition("/")
    return f"{base}/{dbname}"


def create_database(prefix: str = "ipai_test") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    conn = psycopg2.connect(ADMIN_DSN)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return name


def drop_database(name: str) -> None:
    conn = psycopg2.connect(ADMIN_DSN)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


@pytest.fixture
def empty_db_dsn() -> Iterator[str]:
    """DSN of a fresh, empty database (no ops schema)."""
    name = create_database()
    try:
        yield dsn_for(name)
    finally:
        drop_database(name)


@pytest.fixture
def ops_dsn(empty_db_dsn: str) -> str:
    """DSN of a fresh database with the ops schema migrated to head."""
    conn = store.connect(empty_db_dsn)
    try:
        store.migrate(conn)
    finally:
        conn.close()
    return empty_db_dsn


@pytest.fixture(scope="module")
def module_ops_dsn() -> Iterator[str]:
    """Like ``ops_dsn`` but shared by a test module (faster for read-mostly tests)."""
    name = create_database()
    dsn = dsn_for(name)
    conn = store.connect(dsn)
    try:
        store.migrate(conn)
    finally:
        conn.close()
    try:
        yield dsn
    finally:
        drop_database(name)


@pytest.fixture
def ops_conn(ops_dsn: str):
    conn = store.connect(ops_dsn)
    try:
        yield conn
    finally:
        conn.close()


@pytest.fixture(scope="session")
def registry():
    from ipai_ops.taxonomy import load_registry

    return load_registry()
