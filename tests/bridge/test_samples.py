"""Which samples the bridge builds (ipai_ops.bridge.writer.Samples): one rule with the SQL that
stores them (``ops.write_occurrences``, migration 0013), at most once per refresh period per
fingerprint, decided on the occurrences as written."""

from __future__ import annotations

import random
from dataclasses import replace

import psycopg2.extras
import pytest

from ipai_devtools.scratch import throwaway_database
from ipai_ops import store
from ipai_ops.bridge import extract
from ipai_ops.bridge.auth import Sender, Senders
from ipai_ops.bridge.extract import Extractor
from ipai_ops.bridge.pipeline import apply_senders
from ipai_ops.bridge.writer import Samples, Writer
from ipai_ops.envelope import envelope_errors
from tests.bridge.otlp_factory import span, traces

T0 = 1_700_000_000_000_000_000
#: 1 us: occurrence times keep microseconds (PostgreSQL's resolution)
US = 1000


def exception_span(message: str, *, n: int, end_ns: int, error_type: str = "app.OrderMissing", **attributes):
    return span(
        trace_id=(n + 1).to_bytes(16, "big"),
        span_id=(n + 1).to_bytes(8, "big"),
        end_ns=end_ns,
        exceptions=[{"exception.type": error_type, "exception.message": message, **attributes}],
    )


def kept(occurrences) -> list[str]:
    return [occ.occurrence_id for occ in occurrences if occ.sample.wanted]


def test_one_sample_per_fingerprint_the_latest_by_time_then_id(registry):
    extractor = Extractor(registry)
    spans = [
        exception_span("order 1 not found", n=1, end_ns=T0 + 5 * US),
        # n=2 and n=3 share the latest time: the greater id wins (not the first one)
        exception_span("order 2 not found", n=2, end_ns=T0 + 9 * US),
        exception_span("order 3 not found", n=3, end_ns=T0 + 9 * US),
        exception_span("order 4 not found", n=4, end_ns=T0 + 1 * US),
        exception_span("disk full on /srv", n=7, end_ns=T0, error_type="OSError"),
    ]
    out = extractor.traces(traces(spans)).occurrences
    assert len({occ.fingerprint for occ in out}) == 2
    Samples(60).thin(out)
    latest = out[2]
    assert latest.occurrence_id == f"event:{(4).to_bytes(16, 'big').hex()}:{(4).to_bytes(8, 'big').hex()}:0"
    assert latest.occurred_at == out[1].occurred_at and latest.occurrence_id > out[1].occurrence_id
    assert kept(out) == [latest.occurrence_id, out[-1].occurrence_id]
    sample = latest.stored_sample()
    assert envelope_errors(sample) == []
    assert sample["error"]["message"] == "order 3 not found"
    assert sample["context"]["occurrence_id"] == latest.occurrence_id
    assert [occ.stored_sample() is None for occ in out] == [True, True, False, True, False]


def test_a_new_shape_is_classified_from_the_occurrence_whose_sample_is_kept(registry, monkeypatch):
    """A shape first met in a request gets its template from its latest occurrence there, the
    one whose sample the writer keeps: that sample costs no second classification."""
    envelopes = []
    real = extract._envelope
    monkeypatch.setattr(extract, "_envelope", lambda *args, **kwargs: envelopes.append(1) or real(*args, **kwargs))
    spans = [exception_span(f"order {n} not found", n=n, end_ns=T0 + t * US) for n, t in ((1, 5), (2, 9), (3, 1))]
    out = Extractor(registry).traces(traces(spans)).occurrences
    assert len({o.fingerprint for o in out}) == 1 and [o.message for o in out] == [
        f"order {n} not found" for n in (1, 2, 3)
    ]
    Samples(60).thin(out)
    assert kept(out) == [out[1].occurrence_id]
    assert out[1].stored_sample()["error"]["message"] == "order 2 not found"
    assert len(envelopes) == 1


def test_a_request_cut_short_leaves_no_shape_without_its_template(registry):
    """The CPU deadline may stop a request before its new shapes got their templates: they
    are forgotten, and the next request meeting them makes them."""

    class Stopped(Extractor):
        stop = True

        def _make_template(self, *args, **kwargs):
            if self.stop:
                raise RuntimeError("deadline")
            return super()._make_template(*args, **kwargs)

    extractor = Stopped(registry)
    request = traces([exception_span("order 1 not found", n=1, end_ns=T0)])
    with pytest.raises(RuntimeError):
        extractor.traces(request)
    assert not (extractor._templates or extractor._exact or extractor._digit_blind or extractor._pending)
    extractor.stop = False
    (occ,) = extractor.traces(request).occurrences
    assert occ.fingerprint.startswith("fp1:") and occ.sample.envelope is not None


def test_a_key_sent_twice_samples_its_first_copy_only(registry):
    extractor = Extractor(registry)
    twice = exception_span("order 1 not found", n=1, end_ns=T0)
    out = extractor.traces(traces([twice, twice])).occurrences
    Samples(60).thin(out)
    assert [occ.sample.wanted for occ in out] == [True, False]


def test_a_fingerprint_is_sampled_once_per_refresh_period(registry):
    now = [1000.0]
    samples = Samples(60, clock=lambda: now[0])
    extractor = Extractor(registry)

    def batch(n: int):
        out = extractor.traces(traces([exception_span(f"order {n} not found", n=n, end_ns=T0 + n * US)])).occurrences
        samples.thin(out)
        return out[0].stored_sample()

    assert batch(1)["error"]["message"] == "order 1 not found"
    now[0] += 59
    assert batch(2) is None  # the stored sample stays
    now[0] += 2
    sample = batch(3)
    assert sample["error"]["message"] == "order 3 not found"
    assert sample["context"]["trace_id"] == (4).to_bytes(16, "big").hex()
    every = Samples(0)
    for n in range(3):
        out = extractor.traces(traces([exception_span(f"order {n} not found", n=n, end_ns=T0)])).occurrences
        every.thin(out)
        assert out[0].stored_sample()["error"]["message"] == f"order {n} not found"


def test_a_sample_carries_the_ids_the_sender_policy_gave_its_occurrence(registry):
    """On a shared source the occurrence id and a supplied fingerprint are namespaced: the
    sample, built after the policy, says so too."""
    sender = Sender("edge", frozenset(), True, (b"t" * 32,))
    senders = Senders([sender, Sender("other", frozenset(), True, (b"u" * 32,))])
    extraction = Extractor(registry).traces(
        traces(
            [
                exception_span(
                    "order 1 not found",
                    n=1,
                    end_ns=T0,
                    **{"ipai.failure.fingerprint": "fp-mine", "ipai.occurrence_id": "o-1"},
                )
            ]
        )
    )
    apply_senders(extraction, senders, sender)
    (occ,) = extraction.occurrences
    assert occ.occurrence_id != "o-1" and occ.fingerprint != "fp-mine"
    sample = occ.stored_sample()
    assert (sample["context"]["occurrence_id"], sample["error"]["fingerprint"]) == (occ.occurrence_id, occ.fingerprint)


def _stored_samples(dsn: str, occurrences) -> dict[str, dict]:
    conn = store.connect(dsn)
    try:
        store.write_batch(conn, occurrences)
        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute("SELECT fingerprint, sample, last_trace_id FROM ops.agent_errors")
            return {row["fingerprint"]: (row["sample"], row["last_trace_id"]) for row in cur.fetchall()}
    finally:
        conn.close()


def test_the_thinned_batch_stores_what_the_whole_batch_would(registry, ops_dsn):
    """The rule is the SQL's: a batch written with only the thinned samples stores the very
    samples it stores when every occurrence brings its own, ties of time included (many
    occurrences share a microsecond here) and whatever the order of the batch."""
    rng = random.Random(18)
    spans = [
        exception_span(
            f"{kind} {rng.randrange(100)} failed",
            n=rng.randrange(10**6),
            end_ns=T0 + rng.randrange(4) * US,
            error_type=f"app.{kind}Error",
        )
        for kind in ("Order", "Invoice", "Lead", "Sync")
        for _ in range(12)
    ]
    rng.shuffle(spans)
    out = Extractor(registry).traces(traces(spans)).occurrences
    whole = [replace(occ, sample=occ.stored_sample()) for occ in out]
    Samples(60).thin(out)
    assert 4 <= len(kept(out)) < len(out)
    with throwaway_database("ipai_test", migrate=True) as whole_dsn:
        expected = _stored_samples(whole_dsn, whole)
    assert len(expected) == 4 and all(sample for sample, _ in expected.values())
    assert _stored_samples(ops_dsn, out) == expected


def test_the_writer_thins_what_it_writes(registry, ops_dsn):
    writer = Writer(ops_dsn, pool_size=1, sample_refresh_seconds=60)
    try:
        out = (
            Extractor(registry)
            .traces(traces([exception_span(f"order {n} not found", n=n, end_ns=T0 + n * US) for n in range(5)]))
            .occurrences
        )
        written = writer.write_sync(out)
        assert (written.new_occurrences, written.refused) == (5, [])
        assert kept(out) == [out[-1].occurrence_id]
        stored = _stored_samples(ops_dsn, [])
        ((sample, trace_id),) = stored.values()
        assert sample["error"]["message"] == "order 4 not found" and trace_id == (5).to_bytes(16, "big").hex()
    finally:
        writer.close()
