"""Merging error groups (migration 0009): what moves, where later occurrences land, what is refused."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import psycopg2
import pytest

from ipai_ops import store
from ipai_ops.store import ErrorOccurrence

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SNAPSHOT = "SELECT array_agg((id, count, status, merged_into)::text ORDER BY id) FROM ops.agent_errors"


def occ(fingerprint: str, *, at: datetime, source: str = "bridge", occurrence_id: str | None = None, **fields):
    values = {
        "code": "WEBHOOK.SIGNATURE_INVALID",
        "severity": "high",
        "message": f"signature mismatch ({fingerprint})",
        "trace_id": f"trace-{fingerprint}-{at:%H%M}",
        "service_version": "1.0.0",
    }
    values.update(fields)
    return ErrorOccurrence(
        source=source,
        occurrence_id=occurrence_id or uuid.uuid4().hex,
        fingerprint=fingerprint,
        occurred_at=at,
        **values,
    )


def upsert(conn, o: ErrorOccurrence) -> store.UpsertResult:
    return store.upsert_error(conn, o)


def row(conn, error_id: int) -> dict:
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT id, count, status, merged_into, merged_at, first_seen, last_seen, last_trace_id, code,"
            " snooze_until_count FROM ops.agent_errors WHERE id = %s",
            (error_id,),
        )
        names = [d.name for d in cur.description]
        return dict(zip(names, cur.fetchone(), strict=True))


def scalar(conn, sql: str, args=()):
    with conn, conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchone()[0]


def merge(conn, kept: int, merged: list[int]) -> tuple:
    with conn, conn.cursor() as cur:
        cur.execute("SELECT * FROM ops.merge_agent_errors(%s, %s::bigint[])", (kept, merged))
        return cur.fetchone()


@pytest.fixture
def two_groups(ops_conn):
    """Group A (3 occurrences, the older), group B (2 occurrences, seen last), one run on B."""
    a = [upsert(ops_conn, occ("fp-a", at=T0 + timedelta(minutes=i))) for i in range(3)][-1].error_id
    b_occurrences = [occ("fp-b", at=T0 - timedelta(hours=1)), occ("fp-b", at=T0 + timedelta(hours=1))]
    b = [upsert(ops_conn, o) for o in b_occurrences][-1].error_id
    with ops_conn, ops_conn.cursor() as cur:
        cur.execute("INSERT INTO ops.agent_runs (run_id, status, error_id) VALUES ('run-merge-1', 'failed', %s)", (b,))
    return a, b, b_occurrences


def test_merge_moves_counts_occurrences_keys_and_runs(ops_conn, two_groups):
    a, b, b_occurrences = two_groups
    kept_id, merged_count, moved, kept_count = merge(ops_conn, a, [b])
    assert (kept_id, merged_count, moved, kept_count) == (a, 1, 2, 5)

    kept, gone = row(ops_conn, a), row(ops_conn, b)
    assert kept["count"] == 5 and kept["status"] == "open" and kept["merged_into"] is None
    # B had the oldest and the newest occurrence: A's window widens and takes B's last trace
    assert kept["first_seen"] == T0 - timedelta(hours=1)
    assert kept["last_seen"] == T0 + timedelta(hours=1)
    assert kept["last_trace_id"] == b_occurrences[-1].trace_id
    assert (gone["status"], gone["count"], gone["merged_into"]) == ("merged", 0, a)
    assert gone["merged_at"] is not None

    assert scalar(ops_conn, "SELECT count(*) FROM ops.agent_error_occurrences WHERE error_id = %s", (a,)) == 5
    assert scalar(ops_conn, "SELECT count(*) FROM ops.agent_error_occurrences WHERE error_id = %s", (b,)) == 0
    keys = scalar(
        ops_conn,
        "SELECT array_agg(fingerprint ORDER BY fingerprint) FROM ops.error_group_keys WHERE error_id = %s",
        (a,),
    )
    assert keys == ["fp-a", "fp-b"]
    assert scalar(ops_conn, "SELECT error_id FROM ops.agent_runs WHERE run_id = 'run-merge-1'") == a
    # the sum over groups is still the number of distinct occurrences
    assert scalar(ops_conn, "SELECT sum(count) FROM ops.agent_errors") == scalar(
        ops_conn, "SELECT count(*) FROM ops.agent_error_occurrences"
    )


def test_the_kept_group_takes_the_context_of_the_group_seen_last(ops_conn):
    # migration 0012: environment and GenAI provider/model travel like the traces and release
    older = upsert(ops_conn, occ("fp-ctx-a", at=T0, environment="staging", gen_ai_provider="openai",
                                 gen_ai_response_model="gpt-4o")).error_id  # fmt: skip
    newer = upsert(ops_conn, occ("fp-ctx-b", at=T0 + timedelta(hours=2), environment="production",
                                 gen_ai_provider="anthropic", gen_ai_request_model="claude-x")).error_id  # fmt: skip
    merge(ops_conn, older, [newer])
    with ops_conn, ops_conn.cursor() as cur:
        cur.execute(
            "SELECT last_environment, last_gen_ai_provider, last_gen_ai_model FROM ops.agent_errors WHERE id = %s",
            (older,),
        )
        assert cur.fetchone() == ("production", "anthropic", "claude-x")
    # merging an older group into a newer one keeps the newer one's context
    oldest = upsert(ops_conn, occ("fp-ctx-c", at=T0 - timedelta(days=1), environment="dev")).error_id
    merge(ops_conn, older, [oldest])
    assert scalar(ops_conn, "SELECT last_environment FROM ops.agent_errors WHERE id = %s", (older,)) == "production"


def test_later_occurrences_of_the_merged_key_land_on_the_kept_group(ops_conn, two_groups):
    a, b, b_occurrences = two_groups
    merge(ops_conn, a, [b])
    # one writer, then the other: both resolve fp-b to A
    result = upsert(ops_conn, occ("fp-b", at=T0 + timedelta(hours=2)))
    assert (result.error_id, result.count, result.is_new) == (a, 6, True)
    batch = store.write_batch(ops_conn, [occ("fp-b", at=T0 + timedelta(hours=3)), occ("fp-a", at=T0)])
    assert batch.new_occurrences == 2
    assert row(ops_conn, a)["count"] == 8
    assert row(ops_conn, b)["count"] == 0
    # a redelivery of an occurrence counted before the merge counts nothing, on either writer
    again = upsert(ops_conn, b_occurrences[0])
    assert (again.error_id, again.count, again.is_new) == (a, 8, False)
    assert store.write_batch(ops_conn, [b_occurrences[1]]).new_occurrences == 0
    # a new grouping version's key whose previous key is the merged one joins the kept group
    attached = upsert(ops_conn, occ("fp-b-v2", at=T0 + timedelta(hours=4), previous_fingerprint="fp-b"))
    assert attached.error_id == a


def test_merging_into_a_group_that_is_merged_later_leaves_no_chain(ops_conn, two_groups):
    a, b, _ = two_groups
    c = upsert(ops_conn, occ("fp-c", at=T0)).error_id
    merge(ops_conn, a, [b])
    merge(ops_conn, c, [a])
    assert row(ops_conn, b)["merged_into"] == c
    assert row(ops_conn, a)["merged_into"] == c
    assert row(ops_conn, c)["count"] == 6
    assert upsert(ops_conn, occ("fp-b", at=T0 + timedelta(days=1))).error_id == c


def test_a_snooze_for_n_more_occurrences_keeps_its_meaning(ops_conn, two_groups):
    a, b, _ = two_groups
    with ops_conn, ops_conn.cursor() as cur:
        cur.execute(
            "UPDATE ops.agent_errors SET status = 'ignored', snooze_until_count = count + 2 WHERE id = %s", (a,)
        )
    merge(ops_conn, a, [b])
    assert row(ops_conn, a)["snooze_until_count"] == 5 + 2
    assert upsert(ops_conn, occ("fp-a", at=T0 + timedelta(days=1))).status != "open"
    assert upsert(ops_conn, occ("fp-b", at=T0 + timedelta(days=1))).status == "open"


@pytest.mark.parametrize(
    ("kept", "merged", "message"),
    [
        (None, [1], "at least one other"),
        ("a", [], "at least one other"),
        ("a", ["a"], "at least one other"),
        (987654321, ["a"], "error 987654321 does not exist"),
        ("a", [987654321], "error 987654321 does not exist"),
        ("b", ["c"], "is merged into error"),
        ("a", ["b"], "is merged already"),
    ],
)
def test_merge_refusals_are_typed_and_change_nothing(ops_conn, two_groups, kept, merged, message):
    a, b, _ = two_groups
    c = upsert(ops_conn, occ("fp-c", at=T0)).error_id
    ids = {"a": a, "b": b, "c": c}
    if "merged" in message:
        merge(ops_conn, a, [b])
    before = scalar(ops_conn, SNAPSHOT)
    with pytest.raises(psycopg2.errors.InvalidParameterValue, match=message):
        merge(ops_conn, ids.get(kept, kept), [ids.get(m, m) for m in merged])
    after = scalar(ops_conn, SNAPSHOT)
    assert before == after


def test_follow_merges_moves_an_occurrence_that_raced_the_merge(ops_conn, two_groups):
    """A writer that resolved fp-b just before the merge committed counts on the merged row;
    ops.follow_merges() moves that occurrence and its count where the pointer says."""
    a, b, _ = two_groups
    merge(ops_conn, a, [b])
    assert scalar(ops_conn, "SELECT ops.follow_merges()") == 0
    with ops_conn, ops_conn.cursor() as cur:
        # what the racing writer did, statement for statement (its key lookup said B)
        cur.execute(
            "INSERT INTO ops.agent_error_occurrences (source, occurrence_id, error_id, occurred_at)"
            " VALUES ('bridge', 'raced-1', %s, %s)",
            (b, T0 + timedelta(hours=5)),
        )
        cur.execute("UPDATE ops.agent_errors SET count = count + 1 WHERE id = %s", (b,))
    assert scalar(ops_conn, "SELECT ops.follow_merges()") == 1
    assert row(ops_conn, b)["count"] == 0
    assert row(ops_conn, a)["count"] == 6
    assert scalar(ops_conn, "SELECT error_id FROM ops.agent_error_occurrences WHERE occurrence_id = 'raced-1'") == a
    assert scalar(ops_conn, "SELECT ops.follow_merges()") == 0


def test_concurrent_merge_and_writes_count_every_occurrence_once(ops_dsn, two_groups):
    """Writers keep counting fp-a and fp-b while they are merged: nothing is lost or counted twice."""
    import threading

    a, b, _ = two_groups
    errors: list[BaseException] = []
    occurrences = [occ(fp, at=T0 + timedelta(seconds=i)) for i in range(60) for fp in ("fp-a", "fp-b")]

    def write(chunk):
        conn = store.connect(ops_dsn)
        try:
            for i in range(0, len(chunk), 4):
                store.write_batch(conn, chunk[i : i + 4])
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=write, args=(occurrences[i::2],)) for i in range(2)]
    for t in threads:
        t.start()
    conn = store.connect(ops_dsn)
    try:
        merge(conn, a, [b])
        for t in threads:
            t.join()
        assert errors == []
        scalar(conn, "SELECT ops.follow_merges()")
        assert row(conn, b)["count"] == 0
        assert row(conn, a)["count"] == 5 + len(occurrences)
        assert (
            scalar(conn, "SELECT count(*) FROM ops.agent_error_occurrences WHERE error_id = %s", (a,))
            == row(conn, a)["count"]
        )
    finally:
        conn.close()


def test_the_cli_lists_merged_errors_and_shows_the_kept_one_for_a_merged_key(ops_dsn, two_groups):
    import json
    import subprocess
    import sys

    a, b, _ = two_groups
    conn = store.connect(ops_dsn)
    try:
        merge(conn, a, [b])
    finally:
        conn.close()

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "ipai_ops", "errors", *args, "--dsn", ops_dsn],
            capture_output=True,
            text=True,
            check=False,
        )

    listed = cli("list", "--status", "merged", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    assert [row["id"] for row in json.loads(listed.stdout)] == [b]
    shown = cli("show", "fp-b")
    assert shown.returncode == 0, shown.stderr
    assert (json.loads(shown.stdout)["id"], json.loads(shown.stdout)["count"]) == (a, 5)
