"""The 'snoozed' status (migration 0011): both writers reopen it, 'ignored' stays ignored."""

from __future__ import annotations

import psycopg2
import pytest

from ipai_ops import store
from tests.store.test_writers import error_row, occ


def _set(conn, sql: str) -> None:
    with conn, conn.cursor() as cur:
        cur.execute(sql)


def test_snoozed_by_count_reopens_through_the_single_writer(ops_conn):
    store.upsert_error(ops_conn, occ(1))
    _set(ops_conn, "UPDATE ops.agent_errors SET status = 'snoozed', snooze_until_count = count + 2")
    assert store.upsert_error(ops_conn, occ(2)).status == "snoozed"
    assert store.upsert_error(ops_conn, occ(3)).status == "open"
    row = error_row(ops_conn)
    assert (row["snooze_until"], row["snooze_until_count"]) == (None, None)


def test_snoozed_by_date_reopens_through_the_batch_writer(ops_conn):
    store.upsert_error(ops_conn, occ(1))
    _set(ops_conn, "UPDATE ops.agent_errors SET status = 'snoozed', snooze_until = now() + interval '1 hour'")
    store.write_batch(ops_conn, [occ(2)])
    assert error_row(ops_conn)["status"] == "snoozed"
    _set(ops_conn, "UPDATE ops.agent_errors SET snooze_until = now() - interval '1 second'")
    store.write_batch(ops_conn, [occ(3)])
    row = error_row(ops_conn)
    assert (row["status"], row["snooze_until"]) == ("open", None)


def test_ignored_without_a_snooze_stays_ignored(ops_conn):
    store.upsert_error(ops_conn, occ(1))
    _set(ops_conn, "UPDATE ops.agent_errors SET status = 'ignored'")
    assert store.upsert_error(ops_conn, occ(2)).status == "ignored"
    store.write_batch(ops_conn, [occ(3)])
    assert error_row(ops_conn)["status"] == "ignored"


def test_an_unknown_status_is_refused(ops_conn):
    store.upsert_error(ops_conn, occ(1))
    with pytest.raises(psycopg2.errors.CheckViolation):
        _set(ops_conn, "UPDATE ops.agent_errors SET status = 'sleeping'")


def test_the_migration_turns_existing_snoozes_into_snoozed(empty_db_dsn):
    conn = store.connect(empty_db_dsn)
    try:
        store.migrate(conn, up_to=10)
        conn.commit()
        store.upsert_error(conn, occ(1, fp="fp1:" + "1" * 32))
        store.upsert_error(conn, occ(2, fp="fp1:" + "2" * 32))
        _set(conn, "UPDATE ops.agent_errors SET status = 'ignored'")
        _set(conn, f"UPDATE ops.agent_errors SET snooze_until_count = 9 WHERE fingerprint = 'fp1:{'1' * 32}'")
        store.migrate(conn)
        assert error_row(conn, "fp1:" + "1" * 32)["status"] == "snoozed"
        assert error_row(conn, "fp1:" + "2" * 32)["status"] == "ignored"
    finally:
        conn.close()
