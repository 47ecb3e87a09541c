"""Shared fixtures: throwaway PostgreSQL databases on the real server.

Each fixture creates its own database (``ipai_test_<random>``) and drops it
afterwards. The server is taken from ``IPAI_TEST_PG`` (a libpq DSN of a
maintenance database; default ``postgresql://postgres@127.0.0.1:5432/postgres``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg2
import pytest

from ipai_devtools.scratch import throwaway_database
from ipai_ops import store

# The suite classifies by the signatures alone unless a test hands a model over: a model a
# developer trained into var/ must not change what the other tests see.
os.environ.setdefault("IPAI_OPS_MODEL", "off")


@pytest.fixture
def empty_db_dsn() -> Iterator[str]:
    """DSN of a fresh, empty database (no ops schema)."""
    with throwaway_database("ipai_test") as dsn:
        yield dsn


@pytest.fixture
def ops_dsn() -> Iterator[str]:
    """DSN of a fresh database with the ops schema migrated to head."""
    with throwaway_database("ipai_test", migrate=True) as dsn:
        yield dsn


@pytest.fixture(scope="module")
def module_ops_dsn() -> Iterator[str]:
    """Like ``ops_dsn`` but shared by a test module (faster for read-mostly tests)."""
    with throwaway_database("ipai_test", migrate=True) as dsn:
        yield dsn


@pytest.fixture
def ops_conn(ops_dsn: str):
    conn = store.connect(ops_dsn)
    try:
        yield conn
    finally:
        conn.close()


@pytest.fixture(scope="session")
def registry():
    from ipai_ops.registry import load_registry

    return load_registry()


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def run_cli(capsys):
    """Run ``ipai-ops ARGS...`` in-process; return exit code, stdout and stderr."""
    from ipai_ops.cli import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        code = main(list(args))
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def query_rows(dsn: str, sql: str, params: Any = None) -> list[dict[str, Any]]:
    """Rows of one query as dicts, on a connection of its own (committed data only)."""
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql, params)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    finally:
        conn.close()
