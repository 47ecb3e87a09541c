"""Migrations: idempotent, safe concurrently, and equal to schema.sql."""

from __future__ import annotations

import threading

import psycopg2
import pytest

from ipai_devtools import dump_schema
from ipai_devtools.scratch import create_database, drop_database, dsn_for
from ipai_ops import store


def test_migrate_is_idempotent(empty_db_dsn):
    conn = store.connect(empty_db_dsn)
    try:
        first = store.migrate(conn)
        second = store.migrate(conn)
        assert [m.version for m in first] == [m.version for m in store.migrations()]
        assert second == []
        assert store.status(conn)["at_head"]
    finally:
        conn.close()


def test_concurrent_migrations_serialise_on_the_advisory_lock(empty_db_dsn):
    results, errors = [], []

    def run():
        conn = store.connect(empty_db_dsn)
        try:
            results.append(len(store.migrate(conn)))
        except Exception as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(results) == [0, 0, 0, len(store.migrations())]


def test_edited_applied_migration_is_refused(ops_dsn):
    conn = store.connect(ops_dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("UPDATE ops.schema_migrations SET checksum = 'x' WHERE version = 1")
        with pytest.raises(store.MigrationError, match="changed after it was applied"):
            store.migrate(conn)
    finally:
        conn.close()


def test_schema_sql_matches_the_migrations(ops_dsn):
    from_migrations = dump_schema.pg_dump_ops(ops_dsn)
    committed = dump_schema.SCHEMA_FILE.read_text(encoding="utf-8")
    other = create_database()
    try:
        conn = psycopg2.connect(dsn_for(other))
        with conn, conn.cursor() as cur:
            cur.execute(committed)
        conn.close()
        from_file = dump_schema.pg_dump_ops(dsn_for(other))
    finally:
        drop_database(other)
    assert from_file == from_migrations, "schema.sql is stale: run python -m ipai_devtools.dump_schema"
    assert committed == dump_schema.HEADER + from_migrations


def test_unreachable_database_is_one_clear_error():
    with pytest.raises(store.OpsDatabaseUnavailable) as err:
        store.connect("postgresql://someone:secret@127.0.0.1:1/nope", connect_timeout=1)
    message = str(err.value)
    assert "ops database unreachable" in message and "secret" not in message and "\n" not in message
