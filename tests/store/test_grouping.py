"""Groups survive the classifier upgrade (grouping version 2, migration 0006).

Occurrences are first recorded the way grouping version 1 recorded them (its classifier,
``ipai_ops.classify.legacy``, which reproduces the old code exactly, and the pre-0006
writer), on a database at migration 0005. After migrating, the same failures are
replayed through today's pipeline (classify -> envelope -> occurrence -> both writers):
no group may split, none may regress spuriously, and the groups take the new codes.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ipai_devtools.scratch import throwaway_database
from ipai_ops import store
from ipai_ops.classify import classify
from ipai_ops.classify.legacy import classify_v1
from ipai_ops.envelope import build_envelope
from ipai_ops.store import ErrorOccurrence

CORPUS = Path(__file__).resolve().parents[1] / "classify" / "corpus"

_OLD_UPSERT = "SELECT * FROM ops.upsert_agent_error(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb)"


def _failures(limit: int = 120) -> list[str]:
    """Real error messages from the development corpus (one-line and short texts)."""
    texts = []
    for line in (CORPUS / "ops_agent.jsonl").read_text(encoding="utf-8").splitlines():
        case = json.loads(line)
        if case.get("text") and case["family"] != "none" and len(case["text"]) < 2000:
            texts.append(case["text"])
    return texts[:limit]


def _v1_row(registry, message: str, n: int, when: datetime) -> tuple:
    """The row grouping version 1 wrote: its code, and the envelope's fingerprint of it
    (over the redacted, capped message, as ``build_envelope`` always computed it)."""
    code = classify_v1(message=message)
    envelope = build_envelope(
        classify(registry, explicit_code=code), message=message, context={"source": "replay-test"}, occurred_at=when
    )
    error = envelope["error"]
    return (
        "replay-test",
        f"v1-{n}",
        error["fingerprint"],
        code,
        error["severity"],
        error["message"],
        None,
        "svc",
        when,
        None,
        None,
        "1.0",
        None,
    )


@pytest.fixture
def upgraded(registry):
    """A database written by grouping version 1, then migrated to head; the failures."""
    failures = _failures()
    with throwaway_database("ipai_test") as dsn:
        conn = store.connect(dsn)
        store.migrate(conn, up_to=5)
        when = datetime(2026, 1, 1, tzinfo=timezone.utc)
        with conn, conn.cursor() as cur:
            for n, message in enumerate(failures):
                cur.execute(_OLD_UPSERT, _v1_row(registry, message, n, when))
            # Every third group resolved in release 2.0, every fifth snoozed for a year.
            cur.execute("SELECT id FROM ops.agent_errors ORDER BY id")
            ids = [r[0] for r in cur.fetchall()]
            cur.execute(
                "UPDATE ops.agent_errors SET status = 'resolved', resolved_in_version = '2.0', resolved_at = now()"
                " WHERE id = ANY(%s)",
                (ids[::3],),
            )
            cur.execute(
                "UPDATE ops.agent_errors SET status = 'ignored', snooze_until = now() + interval '365 days'"
                " WHERE id = ANY(%s) AND status = 'open'",
                (ids[1::5],),
            )
        store.migrate(conn)
        yield conn, failures
        conn.close()


def _snapshot(conn) -> dict[int, tuple]:
    with conn.cursor() as cur:
        cur.execute("SELECT id, status, count, code FROM ops.agent_errors ORDER BY id")
        return {r[0]: r[1:] for r in cur.fetchall()}


def _replay(registry, conn, failures: list[str], *, prefix: str, version: str) -> list[ErrorOccurrence]:
    when = datetime(2026, 6, 1, tzinfo=timezone.utc)
    occurrences = []
    for n, message in enumerate(failures):
        envelope = build_envelope(
            classify(registry, message=message),
            message=message,
            context={"source": "replay-test", "service": "svc", "service_version": version},
            occurred_at=when + timedelta(seconds=n),
        )
        occurrences.append(ErrorOccurrence.from_envelope(envelope, source="replay-test", occurrence_id=f"{prefix}-{n}"))
    # Half through the batch writer (the bridge), half one by one (Odoo, the CLI).
    half = len(occurrences) // 2
    store.write_batch(conn, occurrences[:half])
    for occ in occurrences[half:]:
        store.upsert_error(conn, occ)
    return occurrences


def test_replayed_failures_join_their_groups_and_take_the_new_codes(registry, upgraded):
    conn, failures = upgraded
    before = _snapshot(conn)
    changed = [m for m in failures if classify(registry, message=m).code != classify_v1(message=m)]
    assert len(changed) >= 10, "the corpus must exercise codes the new classifier changes"

    occurrences = _replay(registry, conn, failures, prefix="v2", version="1.5")

    after = _snapshot(conn)
    assert set(after) == set(before), "a group split (or a new group opened) for a known failure"
    with conn.cursor() as cur:
        cur.execute("SELECT fingerprint, error_id, grouping FROM ops.error_group_keys")
        keys = {fp: (error_id, grouping) for fp, error_id, grouping in cur.fetchall()}
    latest: dict[int, ErrorOccurrence] = {}
    for occ in occurrences:  # in time order: a group takes the code of its newest occurrence
        latest[keys[occ.fingerprint][0]] = occ
    for error_id, occ in latest.items():
        status, _count, code = after[error_id]
        assert code == occ.code
        # Resolved in 2.0 and seen again only in 1.5: not a regression; snoozed stays snoozed.
        assert status == before[error_id][0]
    changed_keys = [occ for occ in occurrences if occ.previous_fingerprint]
    assert len(changed_keys) >= len(changed) > 0
    assert all(keys[occ.fingerprint][1] == 2 for occ in changed_keys)
    assert sum(a[1] for a in after.values()) == sum(b[1] for b in before.values()) + len(failures)


def test_a_redelivered_replay_counts_nothing(registry, upgraded):
    conn, failures = upgraded
    _replay(registry, conn, failures, prefix="v2", version="1.5")
    once = _snapshot(conn)
    _replay(registry, conn, failures, prefix="v2", version="1.5")
    assert _snapshot(conn) == once


def test_a_newer_release_still_regresses_a_resolved_group(registry, upgraded):
    conn, failures = upgraded
    before = _snapshot(conn)
    _replay(registry, conn, failures, prefix="v2", version="2.1")
    after = _snapshot(conn)
    resolved = [i for i, row in before.items() if row[0] == "resolved"]
    assert resolved and all(after[i][0] == "regressed" for i in resolved)


def test_after_the_window_a_changed_failure_opens_a_new_group(registry, upgraded):
    conn, failures = upgraded
    with conn, conn.cursor() as cur:
        cur.execute("UPDATE ops.grouping_versions SET legacy_until = now() - interval '1 day' WHERE version = 2")
    before = _snapshot(conn)
    occurrences = _replay(registry, conn, failures, prefix="late", version="1.5")
    after = _snapshot(conn)
    changed_keys = {occ.fingerprint for occ in occurrences if occ.previous_fingerprint}
    assert changed_keys and len(after) == len(before) + len(changed_keys)


def test_every_group_is_reachable_through_its_own_key(ops_conn):
    occ = ErrorOccurrence(
        source="s",
        occurrence_id="1",
        fingerprint="fp1:" + "a" * 32,
        code="BUILD.TEST_FAILED",
        severity="high",
        message="1 failed",
        occurred_at=datetime.now(timezone.utc),
    )
    result = store.upsert_error(ops_conn, occ)
    with ops_conn.cursor() as cur:
        cur.execute(
            "SELECT error_id, grouping, code FROM ops.error_group_keys WHERE fingerprint = %s", (occ.fingerprint,)
        )
        assert cur.fetchone() == (result.error_id, 2, "BUILD.TEST_FAILED")
