#!/usr/bin/env python3
"""Cost of reporting failures from services and agent steps, each against a baseline of the same run.

    python benchmarks/service_reporting.py [--requests 20000] [--mib 64] [--rounds 3]

(a) ASGI middleware, success path: requests/s of a trivial ASGI app under the maintained
    OpenTelemetry ASGI instrumentation (what a service runs anyway), with and without
    ``ASGIProblemMiddleware`` inside it, called in-process (no server, no network: the
    figure is pure overhead; target >= 0.9x), and what the middleware adds per request as
    a multiple of what the instrumentation adds;
(b) ASGI middleware, failure path: failures/s answered as problem documents, telemetry
    only and with the direct ops upsert into a throwaway PostgreSQL database
    (informational: a failure costs an envelope, a fingerprint, a span event and, with a
    DSN, one round trip; the run checks every failure was counted once);
(c) ``ipai-ops run`` output capture: MiB/s of a child writing ``--mib`` MiB of log lines
    through the recorder (tee to files with the size cap and line redaction, head + tail
    kept) vs the same child with its stdout drained by a plain ``subprocess`` pipe reader
    (target: >= 0.25x; agent steps print far less than the recorder can take).

Every loop is bounded; read the ratios, not the absolute numbers (shared machine).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult  # noqa: E402

from ipai_devtools import scratch  # noqa: E402
from ipai_ops import store  # noqa: E402
from ipai_ops.runs import record_run  # noqa: E402
from ipai_ops.sdk import ASGIProblemMiddleware, Failure, Reporter  # noqa: E402

CHILD = (
    "import sys\n"
    "line = 'GET /api/v1/orders/17 200 in 12ms user=alice region=eu-west-1 ' + 'x' * 60 + '\\n'\n"
    "n = int(sys.argv[1]) // len(line)\n"
    "write = sys.stdout.write\n"
    "for _ in range(n): write(line)\n"
)


# --------------------------------------------------------------------------- (a) and (b)


async def _ok_app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def _failing_app(scope, receive, send):
    raise Failure("TRANSPORT.UPSTREAM_5XX", "payment provider answered 502")


async def _drive(app, n: int) -> float:
    scope = {"type": "http", "method": "GET", "path": "/orders/17", "headers": [], "query_string": b""}

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        return None

    started = time.perf_counter()
    for _ in range(n):
        await app(dict(scope), receive, send)
    return n / (time.perf_counter() - started)


class _Discard(SpanExporter):
    """Spans are built and ended as in production, then dropped (no exporter I/O in the figure)."""

    def export(self, spans):
        return SpanExportResult.SUCCESS


def figure_ab(requests: int, rounds: int) -> dict[str, float]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_Discard()))
    telemetry_only = Reporter("bench-api", source="bench")

    def instrumented(app):
        # What a service runs anyway: the maintained OpenTelemetry ASGI instrumentation.
        return OpenTelemetryMiddleware(app, tracer_provider=provider)

    failures = max(200, requests // 20)
    rates: dict[str, list[float]] = {"bare": [], "otel": [], "otel+ours": [], "failure": [], "failure+db": []}
    with scratch.throwaway_database("ipai_bench", migrate=True) as dsn:
        with_db = Reporter("bench-api", source="bench", dsn=dsn)
        try:
            for _ in range(rounds):
                rates["bare"].append(asyncio.run(_drive(_ok_app, requests)))
                rates["otel"].append(asyncio.run(_drive(instrumented(_ok_app), requests)))
                ours = instrumented(ASGIProblemMiddleware(_ok_app, reporter=telemetry_only))
                rates["otel+ours"].append(asyncio.run(_drive(ours, requests)))
                failing = instrumented(ASGIProblemMiddleware(_failing_app, reporter=telemetry_only))
                rates["failure"].append(asyncio.run(_drive(failing, failures)))
                failing_db = instrumented(ASGIProblemMiddleware(_failing_app, reporter=with_db))
                rates["failure+db"].append(asyncio.run(_drive(failing_db, failures // 2)))
            conn = store.connect(dsn)
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT count(*), sum(count) FROM ops.agent_errors")
                    groups, counted = cur.fetchone()
            finally:
                conn.close()
        finally:
            with_db.close()
    expected = rounds * (failures // 2)
    assert groups == 1 and counted == expected, ("every failure counted once", groups, counted, expected)
    return {name: statistics.median(values) for name, values in rates.items()}


# --------------------------------------------------------------------------- (c)


def _plain(size: int) -> float:
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(size)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    while proc.stdout.read(1 << 16):
        pass
    assert proc.wait() == 0
    return time.perf_counter() - started


def _recorded(size: int, artifacts: Path) -> float:
    started = time.perf_counter()
    result = record_run(
        [sys.executable, "-c", CHILD, str(size)],
        use_db=False,
        artifacts_dir=artifacts,
        quiet=True,
        max_output_bytes=8 << 20,
    )
    elapsed = time.perf_counter() - started
    assert result.status == "succeeded", result.status
    return elapsed


def figure_c(mib: int, rounds: int) -> tuple[float, float]:
    size = mib << 20
    plain, recorded = [], []
    with tempfile.TemporaryDirectory(prefix="ipai-bench-runs-") as tmp:
        for _ in range(rounds):
            plain.append(size / _plain(size) / (1 << 20))
            recorded.append(size / _recorded(size, Path(tmp)) / (1 << 20))
    return statistics.median(recorded), statistics.median(plain)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000, help="success-path requests per round for (a)")
    parser.add_argument("--mib", type=int, default=64, help="MiB the child prints for (c)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are compared")
    args = parser.parse_args(argv)

    # One log line per failure is what a service gets; here it would only measure the terminal.
    logging.getLogger("ipai_ops").addHandler(logging.NullHandler())
    logging.getLogger("ipai_ops").propagate = False
    rates = figure_ab(args.requests, args.rounds)
    otel_cost = 1 / rates["otel"] - 1 / rates["bare"]
    our_cost = 1 / rates["otel+ours"] - 1 / rates["otel"]
    print(
        f"(a) ASGI success path under the OpenTelemetry ASGI instrumentation: {rates['otel+ours']:,.0f} req/s with"
        f" the middleware vs {rates['otel']:,.0f} without -> {rates['otel+ours'] / rates['otel']:.2f}x"
        f" (target >= 0.9x); it adds {our_cost * 1e6:.1f} us a request, {our_cost / otel_cost:.2f}x of what the"
        f" instrumentation itself adds ({otel_cost * 1e6:.1f} us; bare app {rates['bare']:,.0f} req/s)"
    )
    print(
        f"(b) ASGI failure path: {rates['failure']:,.0f} problems/s telemetry only"
        f" ({1e6 / rates['failure']:.0f} us each: envelope, fingerprint, span event, problem),"
        f" {rates['failure+db']:,.0f}/s with the direct ops upsert"
        f" ({rates['failure+db'] / rates['failure']:.2f}x of telemetry only; every failure counted once)"
    )
    recorded, plain = figure_c(args.mib, args.rounds)
    print(
        f"(c) ipai-ops run capture of {args.mib} MiB: {recorded:,.0f} MiB/s vs a plain pipe reader"
        f" {plain:,.0f} MiB/s -> {recorded / plain:.2f}x (target >= 0.25x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
