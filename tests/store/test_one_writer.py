"""One definition of "write an occurrence" (migration 0013): the single upsert is a batch of
one, so the same occurrences written one by one through ``ops.upsert_agent_error`` and
through ``ops.write_agent_errors`` leave the same rows, and the same rows as the upsert of
migration 0012 (its own body) did, statuses and context included."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from datetime import timedelta

import psycopg2
import pytest

from ipai_devtools.scratch import throwaway_database
from ipai_ops import store
from ipai_ops.store import ErrorOccurrence
from tests.store.test_writers import T0

#: The last schema whose single upsert carried its own copy of the write.
BEFORE = 12

FINGERPRINTS = ["fp1:" + c * 32 for c in "abcde"]
#: A group's type and severity are set once, by whichever occurrence opens it: they stay
#: fixed per fingerprint so the comparison does not depend on which one came first.
TYPES = {fp: (f"Error{i}", ("critical", "high", "medium", "low")[i % 4]) for i, fp in enumerate(FINGERPRINTS)}

#: Operator actions between writes, so every status rule is exercised on every writer.
ACTIONS = {
    40: "UPDATE ops.agent_errors SET status = 'resolved', resolved_at = now(), resolved_in_version = '1.2'",
    70: "UPDATE ops.agent_errors SET status = 'snoozed', snooze_until_count = count + 3 WHERE id % 2 = 0",
    90: "UPDATE ops.agent_errors SET status = 'ignored', snooze_until = now() - interval '1 second' WHERE id = 1",
    110: "UPDATE ops.agent_errors SET status = 'snoozed', snooze_until = now() + interval '1 day' WHERE id = 3",
    130: "UPDATE ops.agent_errors SET status = 'ignored', snooze_until = NULL, snooze_until_count = NULL WHERE id = 5",
    150: "UPDATE ops.agent_errors SET status = 'resolved', resolved_in_version = NULL WHERE status <> 'ignored'",
}


def _scenario(seed: int = 18, size: int = 180) -> list[ErrorOccurrence]:
    """Out-of-order times, redeliveries, previous keys (new keys that join a group), missing
    and oversized context, bad token counts, samples now and then."""
    rng = random.Random(seed)
    out: list[ErrorOccurrence] = []
    seconds = rng.sample(range(10 * size), size)
    for n in range(size):
        if out and rng.random() < 0.15:
            out.append(rng.choice(out))  # a redelivery of an earlier occurrence
            continue
        fp = rng.choice(FINGERPRINTS)
        previous = None
        if rng.random() < 0.1:  # grouping version 2's key for a failure version 1 keyed fp
            previous, fp = fp, f"fp1:{n:032x}"
        error_type, severity = TYPES.get(previous or fp, ("NewKeyError", "high"))
        out.append(
            ErrorOccurrence(
                source=rng.choice(["bridge", "odoo"]),
                occurrence_id=f"o{n}",
                fingerprint=fp,
                previous_fingerprint=previous,
                code=rng.choice(["TRANSPORT.UPSTREAM_5XX", "AGENT.TOOL_FAILED"]),
                severity=severity,
                message=f"failure {n}",
                error_type=error_type,
                occurred_at=T0 + timedelta(seconds=seconds[n]),
                service=rng.choice(["svc-a", "svc-b", None]),
                trace_id=rng.choice([f"{n:032x}", None]),
                span_id=f"{n:016x}",
                service_version=rng.choice(["1.0", "1.2", "2.0", None]),
                sample=rng.choice([{"n": n}, None]),
                environment=rng.choice(["production", "staging", None, "e" * 300]),
                gen_ai_provider=rng.choice(["openai", None, "p" * 200]),
                gen_ai_operation=rng.choice(["chat", None]),
                gen_ai_request_model=rng.choice(["gpt-4o", None]),
                gen_ai_response_model=rng.choice(["gpt-4o-2024-08-06", None, "m" * 300]),
                gen_ai_input_tokens=rng.choice([12, None, -3, 10**19]),
                gen_ai_output_tokens=rng.choice([7, None, 0]),
            )
        )
    return out


def _rows(conn) -> dict[str, list[tuple]]:
    """Everything the writes left; times set by now() only as whether they are set."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT id, fingerprint, code, source, service, message, error_type, severity, count,"
            " first_seen, last_seen, status, last_trace_id, last_span_id, last_service_version, sample,"
            " resolved_in_version, regressed_at IS NOT NULL, snooze_until IS NOT NULL, snooze_until_count,"
            " last_environment, last_gen_ai_provider, last_gen_ai_model"
            " FROM ops.agent_errors ORDER BY id"
        )
        errors = cur.fetchall()
        cur.execute(
            "SELECT source, occurrence_id, error_id, occurred_at, trace_id, span_id, service_version,"
            " environment, gen_ai_provider, gen_ai_operation, gen_ai_request_model, gen_ai_response_model,"
            " gen_ai_input_tokens, gen_ai_output_tokens"
            " FROM ops.agent_error_occurrences ORDER BY source, occurrence_id"
        )
        occurrences = cur.fetchall()
        cur.execute("SELECT fingerprint, error_id, grouping, code FROM ops.error_group_keys ORDER BY fingerprint")
        keys = cur.fetchall()
    return {"errors": errors, "occurrences": occurrences, "keys": keys}


def _group(conn, fingerprint: str) -> store.UpsertResult:
    """What the single upsert answers, read back after a batch write."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT e.id, e.count, false, e.status FROM ops.error_group_keys k"
            " JOIN ops.agent_errors e ON e.id = k.error_id WHERE k.fingerprint = %s",
            (fingerprint,),
        )
        return store.UpsertResult(*cur.fetchone())


def _replay(conn, scenario: list[ErrorOccurrence], writer: str) -> list[tuple]:
    answers = []
    for step, occurrence in enumerate(scenario):
        if step in ACTIONS:
            with conn, conn.cursor() as cur:
                cur.execute(ACTIONS[step])
        if writer == "batch":
            written = store.write_batch(conn, [occurrence])
            group = _group(conn, occurrence.fingerprint)
            answers.append((group.error_id, group.count, written.new_occurrences == 1, group.status))
        else:
            answers.append(dataclasses.astuple(store.upsert_error(conn, occurrence)))
    return answers


@pytest.fixture
def schemas() -> Iterator[dict[str, store.Connection]]:
    """Three databases: the upsert as migration 0012 left it, and head's two writers."""
    with (
        throwaway_database("ipai_test") as before,
        throwaway_database("ipai_test", migrate=True) as single,
        throwaway_database("ipai_test", migrate=True) as batch,
    ):
        conns = {"before": store.connect(before), "single": store.connect(single), "batch": store.connect(batch)}
        try:
            store.migrate(conns["before"], up_to=BEFORE)
            yield conns
        finally:
            for conn in conns.values():
                conn.close()


def test_both_writers_and_the_upsert_before_0013_leave_the_same_rows(schemas):
    scenario = _scenario()
    answers = {
        "before": _replay(schemas["before"], scenario, "single"),
        "single": _replay(schemas["single"], scenario, "single"),
        "batch": _replay(schemas["batch"], scenario, "batch"),
    }
    rows = {name: _rows(conn) for name, conn in schemas.items()}

    # the scenario reaches what it is meant to: every status, attached keys, redeliveries
    statuses = {answer[3] for answer in answers["single"]}
    assert {"open", "resolved", "regressed", "snoozed", "ignored"} <= statuses, statuses
    attached = [key for key in rows["single"]["keys"] if key[0] not in FINGERPRINTS]
    assert attached and len(rows["single"]["errors"]) == len(FINGERPRINTS)
    assert len(rows["single"]["occurrences"]) < len(scenario)
    assert any(answer[2] is False for answer in answers["single"])

    assert answers["single"] == answers["before"]
    assert rows["single"] == rows["before"]
    assert answers["batch"] == answers["single"]
    assert rows["batch"] == rows["single"]


def test_the_single_upsert_refuses_an_occurrence_without_its_identity(ops_conn):
    occurrence = _scenario(size=1)[0]
    for missing in ("source", "occurrence_id", "fingerprint"):
        with pytest.raises(psycopg2.errors.NotNullViolation, match="source, occurrence id and fingerprint"):
            store.upsert_error(ops_conn, dataclasses.replace(occurrence, **{missing: None}))
    assert _rows(ops_conn) == {"errors": [], "occurrences": [], "keys": []}


def test_the_aggregate_update_is_written_once(ops_conn):
    """Both writers count through ops.write_occurrences; neither carries its own copy of the
    update that applies the status rules."""
    with ops_conn, ops_conn.cursor() as cur:
        cur.execute(
            "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
            " WHERE n.nspname = 'ops' AND p.prosrc LIKE '%%UPDATE ops.agent_errors%%ops.next_status(%%'"
        )
        assert [name for (name,) in cur.fetchall()] == ["write_occurrences"]
