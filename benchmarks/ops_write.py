#!/usr/bin/env python3
"""Write throughput of the ops schema: single upserts vs the batch writer vs a COPY ceiling.

    python benchmarks/ops_write.py [--events 50000] [--fingerprints 1000] [--redelivery 0.05]

Three writers, same workload (events spread over N fingerprints, a fraction of
them redelivered), each on a freshly truncated schema in the same throwaway
database and the same run:

* single  - ``ops.upsert_agent_error`` once per event (what Odoo and the CLI do: one failure
            at a time; since 0013 a batch of one through the batch writer's SQL);
* batch   - ``ipai_ops.store.write_batch``: one round trip per batch;
* ceiling - COPY the batch into a temp staging table, then a hand-written
            set-based merge with the same dedupe semantics and the same columns
            maintained (two round trips, no JSON, planner statistics on a real
            table): the fastest reasonable way to land the same rows.

Figures are quoted as ratios against the ceiling measured in the same run,
because this machine is shared and absolute numbers drift.

``--before N`` also runs the single and batch writers on a second throwaway database
migrated only up to migration N, interleaved with head's rounds, and prints head / N:
migration 0013 made the single upsert a batch of one (``--before 12`` is the schema
whose upsert carried its own copy of the write).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import random
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ipai_devtools.scratch import throwaway_database
from ipai_ops import store

BATCH = 1000

_MERGE_SQL = """
WITH ensured AS (
    INSERT INTO ops.agent_errors (fingerprint, code, source, service, message, error_type,
                                  severity, count, first_seen, last_seen)
    SELECT DISTINCT ON (fingerprint) fingerprint, code, source, service, message, error_type,
           severity, 0, occurred_at, occurred_at
    FROM _staging ORDER BY fingerprint, occurred_at
    ON CONFLICT (fingerprint) DO NOTHING
)
SELECT 1;
WITH d AS (
    SELECT DISTINCT ON (source, occurrence_id) * FROM _staging ORDER BY source, occurrence_id
), ins AS (
    INSERT INTO ops.agent_error_occurrences (source, occurrence_id, error_id, occurred_at,
                                             trace_id, span_id, service_version)
    SELECT s.source, s.occurrence_id, e.id, s.occurred_at, s.trace_id, s.span_id, s.service_version
    FROM d s JOIN ops.agent_errors e ON e.fingerprint = s.fingerprint
    ORDER BY s.source, s.occurrence_id
    ON CONFLICT DO NOTHING
    RETURNING error_id, source, occurrence_id
), latest AS (
    SELECT DISTINCT ON (ins.error_id) ins.error_id, s.*
    FROM ins JOIN d s ON s.source = ins.source AND s.occurrence_id = ins.occurrence_id
    ORDER BY ins.error_id, s.occurred_at DESC
), agg AS (
    SELECT ins.error_id, count(*) AS n, min(s.occurred_at) AS f, max(s.occurred_at) AS l
    FROM ins JOIN d s ON s.source = ins.source AND s.occurrence_id = ins.occurrence_id
    GROUP BY ins.error_id
)
-- the same columns the product's writer maintains (latest sample, ids, version)
UPDATE ops.agent_errors e
SET count = e.count + agg.n, first_seen = least(e.first_seen, agg.f),
    last_seen = greatest(e.last_seen, agg.l),
    code = CASE WHEN agg.l >= e.last_seen THEN latest.code ELSE e.code END,
    message = CASE WHEN agg.l >= e.last_seen THEN latest.message ELSE e.message END,
    last_trace_id = CASE WHEN agg.l >= e.last_seen THEN latest.trace_id ELSE e.last_trace_id END,
    last_span_id = CASE WHEN agg.l >= e.last_seen THEN latest.span_id ELSE e.last_span_id END,
    last_service_version = CASE WHEN agg.l >= e.last_seen THEN latest.service_version
                                ELSE e.last_service_version END,
    updated_at = now()
FROM agg JOIN latest ON latest.error_id = agg.error_id
WHERE e.id = agg.error_id;
TRUNCATE _staging;
"""

_COLUMNS = (
    "source",
    "occurrence_id",
    "fingerprint",
    "code",
    "severity",
    "message",
    "error_type",
    "service",
    "occurred_at",
    "trace_id",
    "span_id",
    "service_version",
)


def workload(events: int, fingerprints: int, redelivery: float, *, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    base = datetime(2026, 11, 1, tzinfo=timezone.utc)
    out: list[dict] = []
    fresh = 0
    while len(out) < events:
        if out and rng.random() < redelivery:
            out.append(dict(rng.choice(out)))
            continue
        fp = rng.randrange(fingerprints)
        fresh += 1
        out.append(
            {
                "source": "bench",
                "occurrence_id": f"occ-{fresh}",
                "fingerprint": f"fp1:{fp:032x}",
                "code": "TRANSPORT.UPSTREAM_5XX",
                "severity": "high",
                "message": f"upstream answered 502 for request {fresh}",
                "error_type": "requests.exceptions.HTTPError",
                "service": f"svc-{fp % 17}",
                "occurred_at": (base + timedelta(milliseconds=fresh)).isoformat(),
                "trace_id": f"{fresh:032x}",
                "span_id": f"{fresh:016x}",
                "service_version": "1.4.2",
                "sample": None,
            }
        )
    return out


def _reset(conn) -> None:
    with conn, conn.cursor() as cur:
        cur.execute("TRUNCATE ops.agent_error_occurrences, ops.agent_errors RESTART IDENTITY CASCADE")


def _distinct(events: list[dict]) -> int:
    return len({(e["source"], e["occurrence_id"]) for e in events})


def _migrated_up_to(dsn: str, version: int) -> None:
    conn = store.connect(dsn)
    try:
        store.migrate(conn, up_to=version)
    finally:
        conn.close()


def run_single(conn, events: list[dict]) -> float:
    _reset(conn)
    start = time.perf_counter()
    for e in events:
        store.upsert_error(conn, store.ErrorOccurrence(**e))
    return len(events) / (time.perf_counter() - start)


def run_batch(conn, events: list[dict]) -> float:
    _reset(conn)
    start = time.perf_counter()
    for i in range(0, len(events), BATCH):
        store.write_batch(conn, events[i : i + BATCH])
    return len(events) / (time.perf_counter() - start)


def run_ceiling(conn, events: list[dict]) -> float:
    _reset(conn)
    with conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TEMP TABLE IF NOT EXISTS _staging (source text, occurrence_id text, fingerprint text,"
            " code text, severity text, message text, error_type text, service text,"
            " occurred_at timestamptz, trace_id text, span_id text, service_version text)"
        )
    start = time.perf_counter()
    for i in range(0, len(events), BATCH):
        buf = io.StringIO()
        for e in events[i : i + BATCH]:
            buf.write("\t".join(str(e[c]) for c in _COLUMNS))
            buf.write("\n")
        buf.seek(0)
        with conn, conn.cursor() as cur:
            cur.copy_from(buf, "_staging", columns=_COLUMNS)
            cur.execute("ANALYZE _staging")  # real statistics: the staging table's advantage
            cur.execute(_MERGE_SQL)
    return len(events) / (time.perf_counter() - start)


def _check(conn, expected: int, label: str) -> None:
    with conn, conn.cursor() as cur:
        cur.execute("SELECT coalesce(sum(count), 0) FROM ops.agent_errors")
        total = cur.fetchone()[0]
    if total != expected:
        raise SystemExit(f"{label}: counted {total} occurrences, expected {expected}")


def measure_ceiling(dsn: str, *, events: int = 20000, fingerprints: int = 1000, redelivery: float = 0.05) -> float:
    """Events/s of the COPY-and-merge ceiling on ``dsn`` (an ops database; its error tables are truncated)."""
    conn = store.connect(dsn)
    try:
        return run_ceiling(conn, workload(events, fingerprints, redelivery))
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--single-events", type=int, default=3_000, help="single upserts are slow: fewer")
    parser.add_argument("--fingerprints", type=int, default=1_000)
    parser.add_argument("--redelivery", type=float, default=0.05)
    parser.add_argument("--rounds", type=int, default=3, help="rounds, interleaved; median taken")
    parser.add_argument(
        "--before",
        type=int,
        metavar="N",
        help="also measure both writers on a schema migrated only up to migration N (e.g. 12)",
    )
    args = parser.parse_args(argv)
    if args.before is not None and not 1 <= args.before < store.head_version():
        parser.error(f"--before must be between 1 and {store.head_version() - 1}")

    events = workload(args.events, args.fingerprints, args.redelivery)
    single_events = events[: args.single_events]
    single_runs, batch_runs, ceiling_runs = [], [], []
    old_single_runs, old_batch_runs = [], []
    with contextlib.ExitStack() as stack:
        dsn = stack.enter_context(throwaway_database("ipai_bench", migrate=True))
        conn = stack.enter_context(contextlib.closing(store.connect(dsn)))
        old = None
        if args.before is not None:
            old_dsn = stack.enter_context(throwaway_database("ipai_bench"))
            _migrated_up_to(old_dsn, args.before)
            old = stack.enter_context(contextlib.closing(store.connect(old_dsn)))
        for _ in range(args.rounds):
            if old is not None:
                old_single_runs.append(run_single(old, single_events))
                _check(old, _distinct(single_events), f"single at {args.before:04d}")
            single_runs.append(run_single(conn, single_events))
            _check(conn, _distinct(single_events), "single")
            if old is not None:
                old_batch_runs.append(run_batch(old, events))
                _check(old, _distinct(events), f"batch at {args.before:04d}")
            batch_runs.append(run_batch(conn, events))
            _check(conn, _distinct(events), "batch")
            ceiling_runs.append(run_ceiling(conn, events))
            _check(conn, _distinct(events), "ceiling")
    single = statistics.median(single_runs)
    batch, ceiling = statistics.median(batch_runs), statistics.median(ceiling_runs)
    print(
        f"workload: {args.events} events ({args.single_events} for single upserts), {args.fingerprints} fingerprints, "
        f"{args.redelivery:.0%} redelivered, batches of {BATCH}, median of {args.rounds} interleaved rounds"
    )
    print(f"single upserts   : {single:10.0f} events/s  ({single / ceiling:.3f}x ceiling)")
    print(f"batch writer     : {batch:10.0f} events/s  ({batch / ceiling:.3f}x ceiling)  target >= 0.8x")
    print(f"COPY+merge ceiling: {ceiling:9.0f} events/s  (1.000x)")
    print(f"batch / single   : {batch / single:.1f}x")
    if old_single_runs:
        old_single, old_batch = statistics.median(old_single_runs), statistics.median(old_batch_runs)
        print(f"at migration {args.before:04d}: single {old_single:.0f} events/s, batch {old_batch:.0f} events/s")
        print(
            f"single, head / {args.before:04d}: {single / old_single:.3f}x  (rounds: "
            + ", ".join(f"{new / before:.3f}" for new, before in zip(single_runs, old_single_runs, strict=True))
            + ")"
        )
        print(
            f"batch,  head / {args.before:04d}: {batch / old_batch:.3f}x  (rounds: "
            + ", ".join(f"{new / before:.3f}" for new, before in zip(batch_runs, old_batch_runs, strict=True))
            + ")"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
