"""Writers against the real PostgreSQL: exactly-once counting, regression, snooze, retention."""

from __future__ import annotations

import multiprocessing
import random
import threading
from datetime import datetime, timedelta, timezone

import pytest

from ipai_ops import store
from ipai_ops.store import ErrorOccurrence

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)


def occ(
    n: int,
    *,
    fp: str = "fp1:" + "a" * 32,
    source: str = "test",
    at: datetime | None = None,
    version: str | None = None,
    message: str | None = None,
) -> ErrorOccurrence:
    return ErrorOccurrence(
        source=source,
        occurrence_id=f"o{n}",
        fingerprint=fp,
        code="TRANSPORT.UPSTREAM_5XX",
        severity="high",
        message=message or f"502 from upstream (request {n})",
        occurred_at=at or T0 + timedelta(seconds=n),
        service="svc",
        trace_id=f"{n:032x}",
        span_id=f"{n:016x}",
        service_version=version,
        sample={"n": n},
    )


def error_row(conn, fp: str = "fp1:" + "a" * 32) -> dict:
    with conn, conn.cursor() as cur:
        cur.execute("SELECT * FROM ops.agent_errors WHERE fingerprint = %s", (fp,))
        names = [d[0] for d in cur.description]
        return dict(zip(names, cur.fetchone(), strict=True))


def test_single_upsert_counts_each_occurrence_once(ops_conn):
    first = store.upsert_error(ops_conn, occ(1))
    again = store.upsert_error(ops_conn, occ(1))
    second = store.upsert_error(ops_conn, occ(2))
    assert (first.count, first.is_new) == (1, True)
    assert (again.count, again.is_new) == (1, False)
    assert (second.count, second.is_new) == (2, True)
    row = error_row(ops_conn)
    assert row["first_seen"] == T0 + timedelta(seconds=1)
    assert row["last_seen"] == T0 + timedelta(seconds=2)
    assert row["last_trace_id"] == f"{2:032x}" and row["sample"] == {"n": 2}


def test_out_of_order_occurrence_keeps_latest_sample(ops_conn):
    store.upsert_error(ops_conn, occ(5))
    store.upsert_error(ops_conn, occ(3))
    row = error_row(ops_conn)
    assert row["count"] == 2 and row["sample"] == {"n": 5}
    assert row["first_seen"] == T0 + timedelta(seconds=3)


def test_batch_with_repeats_inside_and_across_deliveries(ops_conn):
    fps = ["fp1:" + c * 32 for c in "abc"]
    batch = [occ(i % 10, fp=fps[i % 3]) for i in range(30)]  # 10 distinct occurrence ids, each 3x
    result = store.write_batch(ops_conn, batch)
    assert (result.received, result.new_occurrences) == (30, 10)
    replay = store.write_batch(ops_conn, batch)
    assert replay.new_occurrences == 0 and replay.errors_touched == 0
    with ops_conn, ops_conn.cursor() as cur:
        cur.execute("SELECT sum(count), count(*) FROM ops.agent_errors")
        total, rows = cur.fetchone()
        cur.execute("SELECT count(*) FROM ops.agent_error_occurrences")
        (occurrences,) = cur.fetchone()
    assert (total, occurrences) == (10, 10)
    assert rows <= 3


def test_single_and_batch_writers_serialise_samples_alike(ops_conn):
    """encode_batch stringifies non-JSON values (datetimes); the single upsert must too."""
    from dataclasses import replace

    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    store.upsert_error(ops_conn, replace(occ(1), sample={"at": when}))
    assert error_row(ops_conn)["sample"] == {"at": str(when)}


def test_batch_and_single_writers_agree(ops_conn):
    store.write_batch(ops_conn, [occ(1), occ(2)])
    assert store.upsert_error(ops_conn, occ(2)).is_new is False
    assert store.upsert_error(ops_conn, occ(3)).count == 3


def _thread_worker(dsn: str, seed: int, batches: list[list[ErrorOccurrence]], use_batch: bool) -> None:
    conn = store.connect(dsn)
    rng = random.Random(seed)
    try:
        for batch in rng.sample(batches, len(batches)):
            if use_batch:
                store.write_batch(conn, rng.sample(batch, len(batch)))
            else:
                for item in batch:
                    store.upsert_error(conn, item)
    finally:
        conn.close()


def _workload(distinct: int, fingerprints: int) -> tuple[list[list[ErrorOccurrence]], dict[str, int]]:
    rng = random.Random(99)
    items = [occ(i, fp=f"fp1:{rng.randrange(fingerprints):032x}") for i in range(distinct)]
    expected: dict[str, int] = {}
    for item in items:
        expected[item.fingerprint] = expected.get(item.fingerprint, 0) + 1
    batches = [items[i : i + 50] for i in range(0, distinct, 50)]
    return batches, expected


def _assert_counts(dsn: str, expected: dict[str, int]) -> None:
    conn = store.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT fingerprint, count FROM ops.agent_errors")
            assert dict(cur.fetchall()) == expected
    finally:
        conn.close()


def test_concurrent_threads_count_exactly_once(ops_dsn):
    batches, expected = _workload(600, 20)
    # 6 threads deliver the same 600 occurrences, half through the batch writer, half one by one
    threads = [
        threading.Thread(target=_thread_worker, args=(ops_dsn, seed, batches, seed % 2 == 0)) for seed in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _assert_counts(ops_dsn, expected)


def test_concurrent_processes_count_exactly_once(ops_dsn):
    batches, expected = _workload(1000, 7)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_thread_worker, args=(ops_dsn, seed, batches, True)) for seed in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    _assert_counts(ops_dsn, expected)


def _resolve(conn, *, version: str | None) -> None:
    with conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE ops.agent_errors SET status = 'resolved', resolved_at = now(), resolved_in_version = %s",
            (version,),
        )


def test_new_occurrence_regresses_a_resolved_error(ops_conn):
    store.upsert_error(ops_conn, occ(1))
    _resolve(ops_conn, version=None)
    assert store.upsert_error(ops_conn, occ(1)).status == "resolved"  # a replay is not new
    result = store.upsert_error(ops_conn, occ(2))
    assert result.status == "regressed"
    assert error_row(ops_conn)["regressed_at"] is not None


@pytest.mark.parametrize("writer", ["single", "batch"])
def test_regression_only_from_the_fixed_release_or_later(ops_conn, writer):
    write = (
        (lambda o: store.upsert_error(ops_conn, o))
        if writer == "single"
        else (lambda o: store.write_batch(ops_conn, [o]))
    )
    write(occ(1, version="1.9.0"))
    _resolve(ops_conn, version="1.10.0")
    write(occ(2, version="1.9.3"))  # an old deploy still draining: not a regression
    assert error_row(ops_conn)["status"] == "resolved"
    write(occ(3, version="1.10.0"))
    assert error_row(ops_conn)["status"] == "regressed"


def test_regression_when_the_version_is_unknown(ops_conn):
    store.upsert_error(ops_conn, occ(1, version="2.0"))
    _resolve(ops_conn, version="2.1")
    store.write_batch(ops_conn, [occ(2, version="1.0"), occ(3, version=None)])
    assert error_row(ops_conn)["status"] == "regressed"


def test_a_huge_resolved_in_version_does_not_make_later_occurrences_fail(ops_conn):
    # an operator's mistyped release of 140,000 digits used to overflow numeric on every
    # later occurrence (migration 0008 compares the first 256 characters)
    store.upsert_error(ops_conn, occ(1, version="1.0"))
    _resolve(ops_conn, version="9" * 140_000)
    store.write_batch(ops_conn, [occ(2, version="2.0")])
    assert error_row(ops_conn)["status"] == "resolved"  # 2.0 < 999...: an older release
    store.upsert_error(ops_conn, occ(3, version="9" * 300))
    assert error_row(ops_conn)["status"] == "regressed"  # equal on their first 256 characters


def test_snooze_by_count_and_by_date(ops_conn):
    store.upsert_error(ops_conn, occ(1))
    with ops_conn, ops_conn.cursor() as cur:
        cur.execute("UPDATE ops.agent_errors SET status = 'ignored', snooze_until_count = count + 2")
    assert store.upsert_error(ops_conn, occ(2)).status == "ignored"
    assert store.upsert_error(ops_conn, occ(3)).status == "open"
    assert error_row(ops_conn)["snooze_until_count"] is None

    with ops_conn, ops_conn.cursor() as cur:
        cur.execute("UPDATE ops.agent_errors SET status = 'ignored', snooze_until = now() + interval '1 day'")
    assert store.write_batch(ops_conn, [occ(4)]).new_occurrences == 1
    assert error_row(ops_conn)["status"] == "ignored"
    with ops_conn, ops_conn.cursor() as cur:
        cur.execute("UPDATE ops.agent_errors SET snooze_until = now() - interval '1 second'")
    store.write_batch(ops_conn, [occ(5)])
    assert error_row(ops_conn)["status"] == "open"


def test_retention_deletes_old_occurrences_in_chunks_and_keeps_counts(ops_conn):
    old = [occ(i, at=datetime.now(timezone.utc) - timedelta(days=40, seconds=i)) for i in range(25)]
    recent = [occ(100 + i, at=datetime.now(timezone.utc) - timedelta(hours=i)) for i in range(5)]
    store.write_batch(ops_conn, old + recent)
    deleted = store.purge_occurrences(ops_conn, older_than_days=30, chunk=10)
    assert deleted == 25
    with ops_conn, ops_conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM ops.agent_error_occurrences")
        assert cur.fetchone()[0] == 5
    assert error_row(ops_conn)["count"] == 30
    with pytest.raises(ValueError):
        store.purge_occurrences(ops_conn, older_than_days=0)


def test_retention_command_purges_occurrences_and_webhook_delivery_ids(ops_dsn, ops_conn, capsys):
    from ipai_ops.cli import main

    store.write_batch(ops_conn, [occ(1, at=datetime.now(timezone.utc) - timedelta(days=40))])
    with ops_conn, ops_conn.cursor() as cur:
        cur.execute(
            "INSERT INTO ops.webhook_deliveries (provider, delivery_id, received_at, claimed_at, completed_at)"
            " VALUES ('github', 'old', now() - interval '10 days', now() - interval '10 days', now()),"
            "        ('github', 'new', now() - interval '2 days', now() - interval '2 days', now())"
        )
    assert main(["db", "retention", "--dsn", ops_dsn, "--days", "30", "--webhook-days", "7"]) == 0
    out = capsys.readouterr().out
    assert "deleted 1 occurrence(s) older than 30 day(s)" in out
    assert "forgot 1 webhook delivery id(s) older than 7 day(s)" in out
    with ops_conn, ops_conn.cursor() as cur:
        cur.execute("SELECT delivery_id FROM ops.webhook_deliveries")
        assert cur.fetchall() == [("new",)]


def test_empty_and_malformed_batches(ops_conn):
    assert store.write_batch(ops_conn, []) == store.BatchResult(0, 0, 0)
    # rows missing their identity are skipped by the SQL writer, not half-written
    result = store.write_batch(ops_conn, [{"source": "x", "occurrence_id": None, "fingerprint": "fp1:" + "b" * 32}])
    assert result == store.BatchResult(1, 0, 0)


def _raw_batches(dsn: str, thread: int, rounds: int, errors: list) -> None:
    """Call the SQL writer directly (no deadlock retry in between) with overlapping fingerprints."""
    conn = store.connect(dsn)
    rng = random.Random(thread)
    try:
        for r in range(rounds):
            batch = [
                occ(thread * 100_000 + r * 100 + i, fp=f"fp1:{rng.randrange(12):032x}", source=f"t{thread}")
                for i in range(40)
            ]
            try:
                with conn, conn.cursor() as cur:
                    cur.execute("SELECT * FROM ops.write_agent_errors(%s::jsonb)", (store.encode_batch(batch),))
            except Exception as exc:  # collected: the assertion below names it
                errors.append(repr(exc))
    finally:
        conn.close()


def test_concurrent_batches_with_overlapping_fingerprints_do_not_deadlock(ops_dsn):
    errors: list[str] = []
    threads = [threading.Thread(target=_raw_batches, args=(ops_dsn, t, 25, errors)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    conn = store.connect(ops_dsn)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT sum(count) FROM ops.agent_errors")
        assert cur.fetchone()[0] == 4 * 25 * 40
    conn.close()


def test_occurrence_from_envelope_reads_error_and_context_and_explicit_fields_win():
    envelope = {
        "error": {"code": "BUILD.TEST_FAILED", "fingerprint": "fp1:" + "b" * 32, "severity": "high", "message": "m"},
        "context": {"service": "ctx-svc", "trace_id": "t" * 32, "span_id": "s" * 16, "service_version": "1.2"},
        "occurred_at": "2026-01-02T03:04:05.000Z",
    }
    occ = ErrorOccurrence.from_envelope(envelope, source="agent", occurrence_id=7, service="explicit", span_id=None)
    assert (occ.source, occ.occurrence_id, occ.code, occ.fingerprint) == (
        "agent",
        "7",
        "BUILD.TEST_FAILED",
        "fp1:" + "b" * 32,
    )
    assert (occ.service, occ.trace_id, occ.span_id, occ.service_version) == ("explicit", "t" * 32, "s" * 16, "1.2")
    assert (occ.severity, occ.message, occ.occurred_at, occ.sample) == ("high", "m", envelope["occurred_at"], envelope)
