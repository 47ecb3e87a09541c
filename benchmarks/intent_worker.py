#!/usr/bin/env python3
"""Throughput of the Pulser intent worker, telemetry off vs on, and concurrent claiming.

    python benchmarks/intent_worker.py [--intents 400] [--rounds 3] [--claims 2000] [--keep-db NAME]

Creates a throwaway Odoo database with ipai_reliability + ipai_pulser_connector
(scripts/odoo_layer.py), then, in this process and against the real PostgreSQL:

* worker  - ``odoo.healthcheck`` intents through ``_run_worker(commit=True)`` (claim,
            savepoint, handler, result contract, event log, a commit per attempt: what the
            cron does), alternating telemetry OFF (no-op) and ON (OpenTelemetry SDK
            tracer + meter, spans batched to an in-memory exporter) for ``--rounds`` rounds
            each; the median of each is compared: overhead = 1 - on/off (target <= 5%);
* claim   - two workers claiming (``worker.claim_committed``: SELECT ... FOR UPDATE SKIP LOCKED +
            lease + event, in a READ COMMITTED transaction of its own, as the worker does)
            ``--claims`` intents in batches of 50; claims/s, the claim conflicts (lost races
            raised as serialization failures: must be 0), and a check that no intent was
            claimed twice and none was left behind;
* drain   - two workers running ``--intents`` intents end to end, vs one worker, with the
            claim conflicts the workers counted (``stats["claim_conflicts"]``).

Figures are ratios within one run: the machine is shared and absolute numbers drift.

    python benchmarks/intent_worker.py --baseline /tmp/base [--compare-rounds 3]

compares two versions of the connector in one run: ``/tmp/base`` is another tree of this
repository (e.g. ``git archive <commit> addons | tar -x -C /tmp/base``). Each tree gets a
database of its own; the measurement above runs in a subprocess per tree, alternating
(baseline, current, current, baseline, ...) so drift favours neither, and the medians are
printed as current / baseline ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

import odoo_layer  # noqa: E402


def _odoo_src() -> Path:
    odoo_src = odoo_layer.locate_odoo()
    if odoo_src is None:
        sys.exit("Odoo 19 not found (ODOO_SRC, import odoo, /opt/odoo)")
    return odoo_src


def setup_database(keep: str | None, config: Path | None = None) -> tuple[str, Path, Path]:
    odoo_src = _odoo_src()
    sys.path.insert(0, str(odoo_src))
    work = Path(tempfile.mkdtemp(prefix="ipai_bench_"))
    db = keep or f"ipai_bench_{uuid.uuid4().hex[:10]}"
    config = config or odoo_layer.write_config(odoo_src, work / "odoo.conf", data_dir=work / "data")
    if not keep:
        odoo_layer.install(odoo_src, config, db, demo=False)
    return db, config, work


def open_registry(db: str, config: Path):
    import odoo
    from odoo.modules.registry import Registry
    from odoo.tools import config as odoo_config

    odoo_config.parse_config(["-c", str(config), "--log-level", "warn"])
    odoo.netsvc.init_logger()
    return Registry(db)


def env_for(cr):
    from odoo import SUPERUSER_ID, api

    return api.Environment(cr, SUPERUSER_ID, {})


def enqueue(registry, n: int, tag: str) -> None:
    with registry.cursor() as cr:
        env_for(cr)["ipai.pulser.intent"].create(
            [{"intent_type": "odoo.healthcheck", "args": {}, "source": tag} for _ in range(n)]
        )


def purge(registry) -> None:
    with registry.cursor() as cr:
        cr.execute("DELETE FROM ipai_pulser_intent")


def timed_workers(registry, names, work) -> float:
    """Seconds ``work(intents, name, cr)`` takes in one thread per name, each on its own cursor,
    timed from the moment all are ready; a worker's exception is raised here."""
    errors: list[str] = []
    barrier = threading.Barrier(len(names) + 1)

    def run(name: str) -> None:
        try:
            with registry.cursor() as cr:
                intents = env_for(cr)["ipai.pulser.intent"]
                barrier.wait()
                work(intents, name, cr)
        except Exception as exc:
            errors.append(f"{name}: {exc!r}")
            barrier.abort()  # a worker that failed before the start must not leave the rest waiting

    threads = [threading.Thread(target=run, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    with contextlib.suppress(threading.BrokenBarrierError):  # raised below, with the worker's error
        barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(errors)
    return elapsed


def drain(registry, workers: int, batch: int = 25, conflicts: list | None = None) -> float:
    """Seconds until the queue is empty, with ``workers`` threads each on its own cursor; the
    workers' claim conflicts are appended to ``conflicts``."""

    def work(intents, name, _cr):
        while True:
            stats = intents._run_worker(limit=batch, worker_id=f"bench:{name}", commit=True)
            if conflicts is not None:
                conflicts.append(stats["claim_conflicts"])
            if not stats["claimed"]:
                break

    return timed_workers(registry, [f"w{i}" for i in range(workers)], work)


def check_all_succeeded(registry, n: int) -> None:
    with registry.cursor() as cr:
        cr.execute("SELECT state, attempts, count(*) FROM ipai_pulser_intent GROUP BY 1, 2")
        rows = cr.fetchall()
    if rows != [("succeeded", 1, n)]:
        raise AssertionError(f"expected {n} intents succeeded once, got {rows}")


def bench_worker(registry, n: int, rounds: int) -> dict:
    from odoo.addons.ipai_pulser_connector.services import telemetry
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    rates: dict[str, list[float]] = {"off": [], "on": []}
    # warm-up (imports, caches, plans)
    telemetry.set_enabled(False)
    enqueue(registry, 50, "warmup")
    drain(registry, 1)
    purge(registry)
    for index in range(rounds):
        # alternate the order so drift on a shared machine does not favour one mode
        for mode in ("off", "on") if index % 2 == 0 else ("on", "off"):
            telemetry.set_enabled(mode == "on")
            telemetry.use_providers(tracer_provider, meter_provider)
            enqueue(registry, n, f"bench-{mode}")
            elapsed = drain(registry, 1)
            check_all_succeeded(registry, n)
            purge(registry)
            rates[mode].append(n / elapsed)
    tracer_provider.force_flush()
    spans = len(exporter.get_finished_spans())
    cost_us = {mode: telemetry_cost_us(telemetry, on=(mode == "on")) for mode in ("off", "on")}
    telemetry.set_enabled(True)
    telemetry.use_providers(None, None)
    off, on = statistics.median(rates["off"]), statistics.median(rates["on"])
    return {
        "off_per_s": off,
        "on_per_s": on,
        "overhead": 1 - on / off,
        "spans": spans,
        "rounds": rates,
        "cost_us": cost_us["on"] - cost_us["off"],
    }


def telemetry_cost_us(telemetry, *, on: bool, n: int = 5000) -> float:
    """What the worker's telemetry calls cost per attempt, without the database (µs)."""
    telemetry.set_enabled(on)
    attrs = {
        "ipai.intent.id": 1,
        "ipai.intent.type": "odoo.healthcheck",
        "ipai.intent.attempt": 1,
        "ipai.correlation_id": "c",
    }
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    started = time.perf_counter()
    for _ in range(n):
        with telemetry.attempt_span(traceparent=parent, attributes=attrs) as span:
            telemetry.span_ids(span)
        telemetry.observe("attempt_duration", 0.01, {"ipai.intent.type": "odoo.healthcheck"})
        telemetry.count("intents", 1, {"ipai.intent.type": "odoo.healthcheck", "ipai.intent.outcome": "succeeded"})
        telemetry.audit("run.state", "start", intent_id=1)
        telemetry.audit("run.state", "complete", intent_id=1)
    telemetry.set_enabled(True)
    return (time.perf_counter() - started) / n * 1e6


def _claim_committed():
    """The committed claim of the connector being measured: ``worker.claim_committed``, or
    the model method it was before the worker left the model (a ``--baseline`` tree)."""
    try:
        from odoo.addons.ipai_pulser_connector.worker import claim_committed
    except ImportError:
        return lambda intents, limit, worker_id: intents._claim_committed(limit, worker_id)
    return claim_committed


def bench_claim(registry, n: int, batch: int = 50, max_conflicts: int = 100) -> dict:
    import psycopg2.errors

    claim_committed = _claim_committed()
    enqueue(registry, n, "bench-claim")
    claims: dict[str, list[int]] = {"w1": [], "w2": []}
    conflicts = {"w1": 0, "w2": 0}

    def work(intents, name, _cr):
        while True:
            try:
                got = claim_committed(intents, batch, f"bench:{name}")
            except psycopg2.errors.SerializationFailure:
                conflicts[name] += 1  # a lost race raised instead of skipped
                if conflicts[name] >= max_conflicts:
                    raise
                continue
            if not got:
                break
            claims[name].extend(got.ids)

    elapsed = timed_workers(registry, list(claims), work)
    all_ids = claims["w1"] + claims["w2"]
    duplicates = len(all_ids) - len(set(all_ids))
    with registry.cursor() as cr:
        cr.execute("SELECT count(*) FROM ipai_pulser_intent WHERE state = 'queued'")
        left = cr.fetchone()[0]
    purge(registry)
    return {
        "claims_per_s": len(all_ids) / elapsed,
        "w1": len(claims["w1"]),
        "w2": len(claims["w2"]),
        "duplicates": duplicates,
        "left_queued": left,
        "conflicts": sum(conflicts.values()),
    }


def measure(registry, args) -> dict:
    purge(registry)
    worker = bench_worker(registry, args.intents, args.rounds)
    claim = bench_claim(registry, args.claims)
    drain_conflicts: list[int] = []
    enqueue(registry, args.intents, "bench-drain1")
    one = drain(registry, 1, conflicts=drain_conflicts)
    check_all_succeeded(registry, args.intents)
    purge(registry)
    enqueue(registry, args.intents, "bench-drain2")
    two = drain(registry, 2, conflicts=drain_conflicts)
    check_all_succeeded(registry, args.intents)
    purge(registry)
    return {
        "worker": worker,
        "claim": claim,
        "drain": {"one_per_s": args.intents / one, "two_per_s": args.intents / two, "conflicts": sum(drain_conflicts)},
    }


def report(args, figures: dict) -> int:
    worker, claim, drained = figures["worker"], figures["claim"], figures["drain"]
    print(f"worker  odoo.healthcheck x{args.intents}, {args.rounds} rounds each, median:")
    print(f"        telemetry off {worker['off_per_s']:8.1f} intents/s")
    print(f"        telemetry on  {worker['on_per_s']:8.1f} intents/s   ({worker['spans']} spans exported in memory)")
    print(
        f"        overhead      {worker['overhead'] * 100:8.2f} %   target <= 5 %  "
        f"{'OK' if worker['overhead'] <= 0.05 else 'OVER'}"
    )
    attempt_us = 1e6 / worker["off_per_s"]
    print(
        f"        telemetry calls alone: {worker['cost_us']:.1f} us per attempt = "
        f"{worker['cost_us'] / attempt_us * 100:.2f} % of a {attempt_us / 1000:.1f} ms attempt"
    )
    print(
        "        rounds off: "
        + ", ".join(f"{r:.0f}" for r in worker["rounds"]["off"])
        + " | on: "
        + ", ".join(f"{r:.0f}" for r in worker["rounds"]["on"])
    )
    print(
        f"claim   two workers: {claim['claims_per_s']:8.1f} claims/s  (w1 {claim['w1']}, w2 {claim['w2']}, "
        f"conflicts {claim['conflicts']}, duplicates {claim['duplicates']}, left queued {claim['left_queued']})"
    )
    print(
        f"drain   1 worker {drained['one_per_s']:8.1f} intents/s, 2 workers {drained['two_per_s']:8.1f} intents/s "
        f"(x{drained['two_per_s'] / drained['one_per_s']:.2f}; claim conflicts {drained['conflicts']})"
    )
    ok = claim["duplicates"] == 0 and claim["left_queued"] == 0 and claim["conflicts"] == 0
    return 0 if ok and drained["conflicts"] == 0 else 1


#: The compared figures: (label, path in measure()'s result), all rates (higher is better).
COMPARED = (
    ("worker, telemetry off", ("worker", "off_per_s")),
    ("worker, telemetry on", ("worker", "on_per_s")),
    ("claim, two workers", ("claim", "claims_per_s")),
    ("drain, 1 worker", ("drain", "one_per_s")),
    ("drain, 2 workers", ("drain", "two_per_s")),
)


def compare(args) -> int:
    """Baseline tree vs this one, each measured by this script in a subprocess of its own
    against a database installed from that tree, alternating."""
    odoo_src = _odoo_src()
    work = Path(tempfile.mkdtemp(prefix="ipai_bench_cmp_"))
    trees = {"baseline": Path(args.baseline).resolve() / "addons", "current": odoo_layer.ADDONS}
    setups: dict[str, tuple[str, Path]] = {}
    results: dict[str, list[dict]] = {name: [] for name in trees}
    try:
        for name, addons in trees.items():
            if not (addons / "ipai_pulser_connector" / "__manifest__.py").is_file():
                sys.exit(f"--baseline: no addons/ipai_pulser_connector under {args.baseline}")
            path = ",".join(str(p) for p in (addons, odoo_src / "addons", odoo_src / "odoo" / "addons"))
            config = odoo_layer.write_config(
                odoo_src, work / f"{name}.conf", data_dir=work / f"{name}-data", extra={"addons_path": path}
            )
            db = f"ipai_bench_{name}_{uuid.uuid4().hex[:8]}"
            setups[name] = (db, config)
            odoo_layer.install(odoo_src, config, db, demo=False)
        for index in range(args.compare_rounds):
            for name in ("baseline", "current") if index % 2 == 0 else ("current", "baseline"):
                db, config = setups[name]
                cmd = [sys.executable, __file__, "--keep-db", db, "--config", str(config), "--json"]
                cmd += ["--intents", str(args.intents), "--rounds", str(args.rounds), "--claims", str(args.claims)]
                done = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if not done.stdout.strip():
                    sys.exit(f"{name} run failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
                results[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(f"round {index + 1} {name:8s} done", flush=True)
    finally:
        for db, _config in setups.values():
            odoo_layer.drop_database(db)
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    print(f"\ncurrent / baseline ({args.compare_rounds} runs each, medians; > 1 = current faster):")
    for label, (part, key) in COMPARED:
        base = statistics.median(r[part][key] for r in results["baseline"])
        new = statistics.median(r[part][key] for r in results["current"])
        print(f"  {label:24s} baseline {base:8.1f}/s  current {new:8.1f}/s  ratio {new / base:5.2f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--intents", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--claims", type=int, default=2000)
    parser.add_argument("--keep-db", help="run against this existing database (both addons installed) and keep it")
    parser.add_argument("--config", type=Path, help="with --keep-db: the odoo.conf of that database")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON line")
    parser.add_argument("--baseline", help="compare with the connector of this tree (see above)")
    parser.add_argument("--compare-rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if args.baseline:
        return compare(args)

    db, config, work = setup_database(args.keep_db, args.config)
    try:
        figures = measure(open_registry(db, config), args)
        if args.json:
            print(json.dumps(figures))
            return 0
        return report(args, figures)
    finally:
        if not args.keep_db:
            from odoo.sql_db import close_db

            close_db(db)
            odoo_layer.drop_database(db)
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
