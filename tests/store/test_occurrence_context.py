"""Occurrence context (migration 0010): environment, release and the GenAI call, stored per
occurrence by both writers, the latest on the error group; bad values never fail a write."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from ipai_ops import store
from tests.store.test_writers import T0, error_row, occ


def _context(n: int, **fields):
    values = {
        "environment": "production",
        "gen_ai_provider": "openai",
        "gen_ai_operation": "chat",
        "gen_ai_request_model": "gpt-4o",
        "gen_ai_response_model": f"gpt-4o-2024-0{n % 9 + 1}-01",
        "gen_ai_input_tokens": 100 + n,
        "gen_ai_output_tokens": n,
    }
    values.update(fields)
    return dataclasses.replace(occ(n, version=f"1.{n}.0"), **values)


def _stored(conn, occurrence_id: str) -> dict:
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT environment, service_version, gen_ai_provider, gen_ai_operation, gen_ai_request_model,"
            " gen_ai_response_model, gen_ai_input_tokens, gen_ai_output_tokens"
            " FROM ops.agent_error_occurrences WHERE occurrence_id = %s",
            (occurrence_id,),
        )
        names = [d[0] for d in cur.description]
        return dict(zip(names, cur.fetchone(), strict=True))


@pytest.mark.parametrize("writer", ["single", "batch"])
def test_each_occurrence_keeps_its_context_and_the_group_the_latest(ops_conn, writer):
    def write(*occurrences):
        if writer == "single":
            for o in occurrences:
                store.upsert_error(ops_conn, o)
        else:
            store.write_batch(ops_conn, list(occurrences))

    write(_context(1), _context(2, environment="staging", gen_ai_provider="anthropic", gen_ai_response_model=None))
    assert _stored(ops_conn, "o1") == {
        "environment": "production",
        "service_version": "1.1.0",
        "gen_ai_provider": "openai",
        "gen_ai_operation": "chat",
        "gen_ai_request_model": "gpt-4o",
        "gen_ai_response_model": "gpt-4o-2024-02-01",
        "gen_ai_input_tokens": 101,
        "gen_ai_output_tokens": 1,
    }
    row = error_row(ops_conn)
    # the latest occurrence's; the model that answered, else the one asked for
    assert (row["last_environment"], row["last_service_version"]) == ("staging", "1.2.0")
    assert (row["last_gen_ai_provider"], row["last_gen_ai_model"]) == ("anthropic", "gpt-4o")

    # an older occurrence arriving late changes nothing of the latest
    write(dataclasses.replace(_context(0, environment="dev"), occurred_at=T0 - timedelta(hours=1)))
    row = error_row(ops_conn)
    assert (row["last_environment"], row["last_gen_ai_provider"]) == ("staging", "anthropic")
    # a newer one without context keeps the group's (an error seen from several paths)
    write(occ(3))
    row = error_row(ops_conn)
    assert (row["last_environment"], row["last_gen_ai_provider"], row["last_gen_ai_model"]) == (
        "staging",
        "anthropic",
        "gpt-4o",
    )
    assert row["count"] == 4
    assert _stored(ops_conn, "o3")["gen_ai_provider"] is None


@pytest.mark.parametrize("writer", ["single", "batch"])
def test_bad_values_are_capped_or_dropped_never_failing_the_write(ops_conn, writer):
    bad = {
        "environment": "e" * 1000,
        "gen_ai_provider": "p" * 1000,
        "gen_ai_operation": "o" * 1000,
        "gen_ai_request_model": "m" * 1000,
        "gen_ai_response_model": None,
    }
    tokens = [(-1, 5), ("12", 1.5), ({"n": 1}, True), (10**19, "abc")]
    occurrences = [_context(n, gen_ai_input_tokens=i, gen_ai_output_tokens=o, **bad) for n, (i, o) in enumerate(tokens)]
    if writer == "single":
        for o in occurrences:
            store.upsert_error(ops_conn, o)
    else:
        # plain dicts, as a writer other than ErrorOccurrence might send them
        assert store.write_batch(ops_conn, [o.as_json() for o in occurrences]).new_occurrences == len(tokens)
    stored = [_stored(ops_conn, f"o{n}") for n in range(len(tokens))]
    for row in stored:
        assert len(row["environment"]) == 256 and len(row["gen_ai_request_model"]) == 256
        assert len(row["gen_ai_provider"]) == 128 and len(row["gen_ai_operation"]) == 128
    # only non-negative integers are token counts: a digit string is JSON text "12" the SQL
    # reads as 12 (the bridge itself only sends integers)
    assert [(r["gen_ai_input_tokens"], r["gen_ai_output_tokens"]) for r in stored] == [
        (None, 5),
        (12, None),
        (None, None),
        (None, None),
    ]
    row = error_row(ops_conn)
    assert row["count"] == len(tokens)
    assert len(row["last_gen_ai_model"]) == 256 and len(row["last_environment"]) == 256


def test_from_envelope_reads_the_environment(ops_conn):
    envelope = {
        "error": {"code": "TRANSPORT.UPSTREAM_5XX", "fingerprint": "fp1:" + "e" * 32, "message": "502"},
        "context": {"service": "svc", "service_version": "3.0.0", "env": "production"},
        "occurred_at": T0.isoformat(),
    }
    occurrence = store.ErrorOccurrence.from_envelope(envelope, source="odoo", occurrence_id="x1")
    assert occurrence.environment == "production"
    store.upsert_error(ops_conn, occurrence)
    assert _stored(ops_conn, "x1")["environment"] == "production"
    assert error_row(ops_conn, "fp1:" + "e" * 32)["last_environment"] == "production"
