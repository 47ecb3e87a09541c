"""Retention: the cap on stored occurrences per error group (storms), on a real database."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from ipai_ops import store
from tests.store.test_writers import occ


def _stored(conn, fp: str) -> list[str]:
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT o.occurrence_id FROM ops.agent_error_occurrences o JOIN ops.agent_errors e ON e.id = o.error_id"
            " WHERE e.fingerprint = %s ORDER BY o.occurred_at, o.occurrence_id",
            (fp,),
        )
        return [row[0] for row in cur.fetchall()]


def _count(conn, fp: str) -> int:
    with conn, conn.cursor() as cur:
        cur.execute("SELECT count FROM ops.agent_errors WHERE fingerprint = %s", (fp,))
        return cur.fetchone()[0]


def test_a_storm_keeps_each_groups_first_and_most_recent_occurrences_and_its_exact_count(ops_conn):
    storm, quiet = "fp1:" + "b" * 32, "fp1:" + "c" * 32
    store.write_batch(ops_conn, [occ(n, fp=storm) for n in range(60)])
    store.write_batch(ops_conn, [occ(100 + n, fp=quiet) for n in range(5)])
    recent = datetime.now(timezone.utc)
    store.write_batch(ops_conn, [occ(200 + n, fp=storm, at=recent) for n in range(3)])  # inside the retry window
    trimmed = store.trim_groups(ops_conn, keep=10, min_age_seconds=600, chunk=7)  # several chunks
    kept = _stored(ops_conn, storm)
    # the first, then the 10 most recent (3 recent + 7 old ones)
    assert kept == ["o0"] + [f"o{n}" for n in range(53, 60)] + ["o200", "o201", "o202"]
    assert trimmed == 63 - 11
    assert _count(ops_conn, storm) == 63  # the count is never touched
    assert len(_stored(ops_conn, quiet)) == 5  # under the cap: nothing trimmed
    # a redelivery of a kept occurrence is still recognised; a second run trims nothing
    store.write_batch(ops_conn, [occ(202, fp=storm, at=recent)])
    assert _count(ops_conn, storm) == 63
    assert store.trim_groups(ops_conn, keep=10, min_age_seconds=600) == 0


def test_recent_occurrences_are_never_trimmed_whatever_the_cap(ops_conn):
    fp = "fp1:" + "d" * 32
    now = datetime.now(timezone.utc)
    store.write_batch(ops_conn, [occ(n, fp=fp, at=now - timedelta(seconds=n)) for n in range(30)])
    assert store.trim_groups(ops_conn, keep=2, min_age_seconds=3600) == 0
    assert len(_stored(ops_conn, fp)) == 30


@pytest.mark.parametrize(("kwargs", "why"), [({"keep": 0}, "keep"), ({"keep": 5, "chunk": 0}, "chunk")])
def test_bad_arguments_are_refused(ops_conn, kwargs, why):
    with pytest.raises(ValueError, match=why):
        store.trim_groups(ops_conn, **kwargs)


def test_the_cli_trims_when_asked_and_says_so(ops_dsn, ops_conn, run_cli):
    fp = "fp1:" + "e" * 32
    store.write_batch(ops_conn, [occ(n, fp=fp) for n in range(20)])
    result = run_cli(
        "db", "retention", "--dsn", ops_dsn, "--days", "3650", "--max-per-group", "5", "--group-min-age", "0"
    )
    assert result.code == 0, result.err
    assert "trimmed 14 occurrence(s) beyond each group's first and 5 most recent" in result.out
    assert len(_stored(ops_conn, fp)) == 6 and _count(ops_conn, fp) == 20
    bad = run_cli("db", "retention", "--dsn", ops_dsn, "--days", "9", "--max-per-group", "5", "--group-min-age", "-1")
    assert bad.code == 2 and "--group-min-age must be >= 0" in bad.err
