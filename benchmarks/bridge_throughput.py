#!/usr/bin/env python3
"""Throughput of the OTLP bridge, each figure as a ratio against a baseline from the same run.

    python benchmarks/bridge_throughput.py [--quick]

(a) spans/s of error-free OTLP/HTTP protobuf traffic through ``ipai-ops bridge serve``
    vs a decode-and-discard receiver on the same stack (aiohttp + uvloop + the bridge's
    own body reading and protobuf decoding), same load generator (target >= 0.7x);
(b) error spans/s written at 100% errors over 1,000 fingerprints with 5% redelivery vs
    the ops batch-write ceiling of benchmarks/ops_write.py ``measure_ceiling`` (>= 0.6x);
(c) peak RSS of the bridge (supervisor + workers) under overload, and the 503s it
    answered instead of growing (target < 300 MB);
(d) the error path with realistic SDK exceptions: ``exception`` events whose type is one of
    1,000, whose message carries ids (order numbers, customer ids, hex addresses), with a
    10-frame stack trace, 5% redelivery, written per second vs the same ceiling as (b)
    (target >= 0.6x). Every event is classified, fingerprinted and enveloped.
    ``--baseline DIR`` also runs the bridge of another checkout (e.g. ``git worktree add
    /tmp/base HEAD~1``) in each round, in alternating order, and prints this tree's rate
    over the baseline's per round: on a loaded machine the ceiling swings more than the
    change being measured.

Load goes to 127.0.0.1 only; every loop is bounded. The machine is small and shared:
read the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import statistics
import string
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "benchmarks"))

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: E402
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue  # noqa: E402
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status  # noqa: E402
from ops_write import measure_ceiling  # noqa: E402  (the batch-write ceiling of figure b)

from ipai_devtools import scratch  # noqa: E402
from ipai_ops import store  # noqa: E402

LAUNCH = [sys.executable, "-c", "import sys; from ipai_ops.cli import main; sys.exit(main())"]
CEILING_BATCH = 1000


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not become healthy")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_bridge(dsn: str, *, workers: int, root: Path = ROOT, **flags: object) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [*LAUNCH, "bridge", "serve", "--host", "127.0.0.1", "--http-port", str(port), "--grpc-port", "0"]
    cmd += ["--workers", str(workers), "--dsn", dsn, "--log-level", "WARNING"]
    for key, value in flags.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    proc = subprocess.Popen(cmd, cwd=root)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, proc)
    return proc, url


def start_discard(*, workers: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--discard-server", str(port), "--workers", str(workers)], cwd=ROOT
    )
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, proc)
    return proc, url


def ops_database():
    """A throwaway ops database (migrated), dropped on exit."""
    return scratch.throwaway_database("ipai_bench", migrate=True)


def word(n: int) -> str:
    """Letters only, so fingerprint normalisation keeps n's distinct."""
    out = ""
    for _ in range(4):
        out += string.ascii_lowercase[n % 26]
        n //= 26
    return out


def _kv(key: str, value: str | int) -> KeyValue:
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def request_body(spans: list[Span], service: str = "bench") -> bytes:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.extend([_kv("service.name", service), _kv("service.version", "1.4.2")])
    scope = rs.scope_spans.add()
    scope.scope.name = "bench"
    scope.spans.extend(spans)
    return request.SerializeToString()


def plain_span(rng: random.Random, now: int) -> Span:
    """A typical HTTP server span: 8 attributes, no error."""
    return Span(
        trace_id=rng.randbytes(16),
        span_id=rng.randbytes(8),
        parent_span_id=rng.randbytes(8),
        name="GET /pulser/v1/intents/{ref}",
        kind=Span.SPAN_KIND_SERVER,
        start_time_unix_nano=now,
        end_time_unix_nano=now + 1_500_000,
        attributes=[
            _kv("http.request.method", "GET"),
            _kv("http.route", "/pulser/v1/intents/{ref}"),
            _kv("http.response.status_code", 200),
            _kv("url.path", f"/pulser/v1/intents/{rng.randrange(10**6)}"),
            _kv("url.scheme", "https"),
            _kv("server.address", "odoo.example.com"),
            _kv("user_agent.original", "python-requests/2.32"),
            _kv("network.peer.address", "10.0.0.12"),
        ],
    )


def error_span(trace_id: bytes, span_id: bytes, kind: int, now: int) -> Span:
    span = Span(
        trace_id=trace_id,
        span_id=span_id,
        name="POST /upstream",
        kind=Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=now,
        end_time_unix_nano=now + 2_000_000,
        attributes=[_kv("http.request.method", "POST"), _kv("http.response.status_code", 502)],
    )
    span.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message=f"upstream answered 502 for {word(kind)}"))
    return span


async def load(url: str, bodies: list[bytes], *, concurrency: int, repeat: int = 1) -> dict[int, int]:
    """POST every body ``repeat`` times with ``concurrency`` connections; status -> count."""
    import aiohttp

    statuses: dict[int, int] = {}
    queue = [b for _ in range(repeat) for b in bodies]
    position = 0
    headers = {"Content-Type": "application/x-protobuf"}

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal position
        while position < len(queue):
            body = queue[position]
            position += 1
            try:
                async with session.post(url + "/v1/traces", data=body, headers=headers) as resp:
                    await resp.read()
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1
            except aiohttp.ClientError:
                statuses[0] = statuses.get(0, 0) + 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return statuses


def run_load(url: str, bodies: list[bytes], *, concurrency: int, repeat: int = 1) -> tuple[float, dict[int, int]]:
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    started = time.perf_counter()
    statuses = runner(load(url, bodies, concurrency=concurrency, repeat=repeat))
    return time.perf_counter() - started, statuses


# --------------------------------------------------------------------------- the discard receiver


def discard_server(port: int) -> None:
    """Decode-and-discard on the bridge's own stack: aiohttp, uvloop, read_body, gunzip, decode."""
    from aiohttp import web

    from ipai_ops.bridge.http_server import read_body
    from ipai_ops.bridge.otlp import PROTOBUF, check_content_type, decode, gunzip
    from ipai_ops.bridge.server import _new_loop
    from ipai_ops.bridge.settings import Settings

    settings = Settings()
    answer = ExportTraceServiceResponse().SerializeToString()

    async def traces(request: web.Request) -> web.Response:
        kind = check_content_type(request.headers.get("Content-Type"))
        body = await read_body(request, limit=settings.max_body_bytes)
        if request.headers.get("Content-Encoding") == "gzip":
            body = gunzip(body, limit=settings.max_decompressed_bytes)
        decode("traces", body, kind)
        return web.Response(body=answer, content_type=PROTOBUF)

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v1/traces", traces)
        app.router.add_get("/healthz", healthz)
        runner = web.AppRunner(app, auto_decompress=False, access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, reuse_port=True, backlog=1024).start()
        done = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, done.set)
        await done.wait()
        await runner.cleanup()

    loop = _new_loop("auto")
    loop.run_until_complete(main())


# --------------------------------------------------------------------------- the three figures


def figure_a(*, workers: int, requests: int, concurrency: int, rounds: int = 3) -> tuple[float, float]:
    """Both servers up at once, measured in interleaved rounds; the median of each is kept."""
    rng = random.Random(1)
    now = time.time_ns()
    bodies = [request_body([plain_span(rng, now) for _ in range(512)]) for _ in range(16)]
    repeat = max(1, requests // len(bodies))
    spans = 512 * len(bodies) * repeat
    servers: dict[str, tuple[subprocess.Popen, str]] = {}
    rates: dict[str, list[float]] = {"discard": [], "bridge": []}
    with ops_database() as dsn:
        try:
            servers["discard"] = start_discard(workers=workers)
            servers["bridge"] = start_bridge(dsn, workers=workers)
            for _, url in servers.values():
                run_load(url, bodies[:4], concurrency=concurrency)  # warm up
            for _ in range(rounds):
                for name, (_, url) in servers.items():
                    elapsed, statuses = run_load(url, bodies, concurrency=concurrency, repeat=repeat)
                    assert statuses == {200: len(bodies) * repeat}, statuses
                    rates[name].append(spans / elapsed)
        finally:
            for proc, _ in servers.values():
                stop(proc)
    return statistics.median(rates["bridge"]), statistics.median(rates["discard"])


def error_workload(events: int, fingerprints: int, redelivery: float) -> list[bytes]:
    rng = random.Random(7)
    now = time.time_ns()
    made: list[tuple[bytes, bytes, int]] = []
    while len(made) < events:
        if made and rng.random() < redelivery:
            made.append(rng.choice(made))  # same ids: the same occurrence, delivered again
        else:
            made.append((rng.randbytes(16), rng.randbytes(8), rng.randrange(fingerprints)))
    return [
        request_body(
            [error_span(t, s, k, now + j * 1000) for j, (t, s, k) in enumerate(made[i : i + CEILING_BATCH], i)]
        )
        for i in range(0, len(made), CEILING_BATCH)
    ]


def row_count(dsn: str, table: str) -> int:
    conn = store.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM {table}")  # a constant table name of this script
            return cur.fetchone()[0]
    finally:
        conn.close()


def figure_b(*, workers: int, events: int, concurrency: int) -> tuple[float, float, int]:
    with ops_database() as ceiling_dsn, ops_database() as bridge_dsn:
        ceiling = measure_ceiling(ceiling_dsn, events=events, fingerprints=1000, redelivery=0.05)
        bodies = error_workload(events, 1000, 0.05)
        proc, url = start_bridge(bridge_dsn, workers=workers)
        try:
            run_load(url, [error_workload(50, 5, 0)[0]], concurrency=1)  # warm up (separate fingerprints)
            elapsed, statuses = run_load(url, bodies, concurrency=concurrency)
            assert statuses == {200: len(bodies)}, statuses
        finally:
            stop(proc)
        return events / elapsed, ceiling, row_count(bridge_dsn, "ops.agent_error_occurrences")


_MODULES = ("app.orders", "app.billing", "shop.api", "sync.odoo", "agents.tools", "payments.stripe", "crm.leads")
_KINDS = ("NotFound", "Invalid", "Timeout", "Conflict", "Unavailable", "Rejected", "Missing", "Stale", "Locked")
_MESSAGES = (
    "Order {n} not found for customer 'c_{h}'",
    "invoice INV/{n} could not be posted: journal {m} is locked",
    "upstream answered 503 for /v1/orders/{n} after {m} ms",
    "HTTPSConnectionPool(host='api{m}.example.com', port=443): Max retries exceeded with url: /v1/items/{n}",
    "lead {n} has no partner (session 0x{h})",
    "KeyError: 'sku_{n}'",
)


def sdk_exception(rng: random.Random, kind: int) -> tuple[str, str, str]:
    """(type, message, 10-frame Python stack trace) of one of 1,000 exception kinds, ids drawn fresh."""
    module = _MODULES[kind % len(_MODULES)]
    name = f"{_KINDS[kind % len(_KINDS)]}{word(kind).capitalize()}Error"
    message = _MESSAGES[kind % len(_MESSAGES)].format(
        n=rng.randrange(10**6), m=rng.randrange(1000), h=f"{rng.getrandbits(32):08x}"
    )
    # One kind is raised from one place: its frames (and line numbers) are the same each time.
    lines = random.Random(kind)
    frames = "".join(
        f'  File "/srv/{module.replace(".", "/")}/layer{i}.py", line {lines.randrange(20, 900)}, '
        f"in step_{kind % 7}_{i}\n"
        f"    result = self.call_{i}(payload)\n"
        for i in range(10)
    )
    return f"{module}.{name}", message, f"Traceback (most recent call last):\n{frames}{module}.{name}: {message}\n"


def exception_span(trace_id: bytes, span_id: bytes, kind: int, now: int, rng: random.Random) -> Span:
    error_type, message, stacktrace = sdk_exception(rng, kind)
    span = Span(
        trace_id=trace_id,
        span_id=span_id,
        name="handle",
        kind=Span.SPAN_KIND_SERVER,
        start_time_unix_nano=now,
        end_time_unix_nano=now + 3_000_000,
    )
    span.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message=message))
    event = span.events.add()
    event.name = "exception"
    event.time_unix_nano = now + 1_000_000
    event.attributes.extend(
        [_kv("exception.type", error_type), _kv("exception.message", message), _kv("exception.stacktrace", stacktrace)]
    )
    return span


def sdk_workload(events: int, kinds: int, redelivery: float, *, seed: int = 11) -> list[bytes]:
    rng = random.Random(seed)
    now = time.time_ns()
    made: list[tuple[bytes, bytes, int, int]] = []
    while len(made) < events:
        if made and rng.random() < redelivery:
            made.append(rng.choice(made))  # same ids and seed: the same occurrence, delivered again
        else:
            made.append((rng.randbytes(16), rng.randbytes(8), rng.randrange(kinds), rng.getrandbits(32)))
    return [
        request_body(
            [
                exception_span(t, s, k, now + j * 1000, random.Random(seed))
                for j, (t, s, k, seed) in enumerate(made[i : i + CEILING_BATCH], i)
            ]
        )
        for i in range(0, len(made), CEILING_BATCH)
    ]


def figure_d(
    *, events: int, concurrency: int, rounds: int, baseline: Path | None = None
) -> tuple[float, float, float, int, list[float]]:
    """Median bridge rate, median ceiling and median per-round ratio over ``rounds``
    interleaved rounds (the ceiling swings with the machine's load; a round measures both
    within seconds of each other), the groups of the last round, and with ``baseline`` (a
    checkout) this tree's rate over the baseline's bridge in each round (the two run in
    alternating order)."""
    written, ceilings, ratios, versus = [], [], [], []
    groups = 0
    with ops_database() as ceiling_dsn:
        for round_ in range(rounds):
            ceiling = measure_ceiling(ceiling_dsn, events=events, fingerprints=1000, redelivery=0.05)
            bodies = sdk_workload(events, 1000, 0.05, seed=11 + round_)
            roots = [ROOT] if baseline is None else [ROOT, baseline][:: 1 if round_ % 2 == 0 else -1]
            rates = {}
            for root in roots:
                with ops_database() as bridge_dsn:
                    proc, url = start_bridge(bridge_dsn, workers=1, root=root)
                    try:
                        run_load(url, [sdk_workload(50, 5, 0, seed=1)[0]], concurrency=1)  # warm up
                        elapsed, statuses = run_load(url, bodies, concurrency=concurrency)
                        assert statuses == {200: len(bodies)}, statuses
                    finally:
                        stop(proc)
                    if root == ROOT:
                        groups = row_count(bridge_dsn, "ops.agent_errors")
                rates[root] = events / elapsed
            written.append(rates[ROOT])
            ceilings.append(ceiling)
            ratios.append(written[-1] / ceiling)
            if baseline is not None:
                versus.append(rates[ROOT] / rates[baseline])
    return statistics.median(written), statistics.median(ceilings), statistics.median(ratios), groups, versus


def _rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def _family(pid: int) -> list[int]:
    out = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return out
    for child in children:
        out += _family(int(child))
    return out


def figure_c(*, workers: int, seconds: float, concurrency: int) -> tuple[float, dict[int, int]]:
    with ops_database() as dsn:
        proc, url = start_bridge(dsn, workers=workers)
        peak = 0
        try:
            # 1,000 error spans (~150 KB) per request: every admitted one holds a DB write.
            bodies = error_workload(20_000, 1000, 0.0)
            peak = _rss_kib(_family(proc.pid))
            outcome: dict[str, object] = {}

            def blast() -> None:
                deadline = time.monotonic() + seconds
                totals: dict[int, int] = {}
                while time.monotonic() < deadline:
                    _, statuses = run_load(url, bodies, concurrency=concurrency, repeat=10)
                    for status, count in statuses.items():
                        totals[status] = totals.get(status, 0) + count
                outcome["statuses"] = totals

            thread = threading.Thread(target=blast)
            thread.start()
            while thread.is_alive():
                peak = max(peak, _rss_kib(_family(proc.pid)))
                time.sleep(0.05)
            thread.join()
        finally:
            stop(proc)
        return peak / 1024, outcome.get("statuses", {})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (smoke test)")
    parser.add_argument("--workers", type=int, default=1, help="bridge/receiver workers for (a)")
    parser.add_argument("--figures", default="abcd", help="which figures to measure, e.g. 'a' or 'bd' (default abcd)")
    parser.add_argument(
        "--baseline", type=Path, help="(d) also run the bridge of this checkout in each round and compare"
    )
    parser.add_argument("--discard-server", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.discard_server:
        discard_server(args.discard_server)
        return 0
    quick = args.quick
    cores = os.cpu_count() or 1
    print(f"bridge throughput, {cores} cores, loopback, OTLP/HTTP protobuf")

    if "a" in args.figures:
        measure_a(args, quick)
    if "b" in args.figures:
        measure_b(quick)
    if "c" in args.figures:
        measure_c(quick, cores)
    if "d" in args.figures:
        measure_d(quick, args.baseline.resolve() if args.baseline else None)
    return 0


def measure_a(args: argparse.Namespace, quick: bool) -> None:
    bridge_a, discard_a = figure_a(workers=args.workers, requests=48 if quick else 240, concurrency=8)
    print(
        f"(a) error-free traffic, {args.workers} worker(s): bridge {bridge_a:,.0f} spans/s, "
        f"decode-and-discard {discard_a:,.0f} spans/s (medians of 3 interleaved rounds) -> "
        f"{bridge_a / discard_a:.2f}x (target >= 0.7x)"
    )


def measure_b(quick: bool) -> None:
    events = 5_000 if quick else 20_000
    # One worker: PostgreSQL, the load generator and the bridge share this machine's cores,
    # and the ceiling is measured with one connection too.
    written, ceiling, occurrences = figure_b(workers=1, events=events, concurrency=4)
    print(
        f"(b) 100% errors, 1,000 fingerprints, 5% redelivery, {events:,} events in batches of "
        f"{CEILING_BATCH}, 1 worker: bridge {written:,.0f} error spans/s, batch-write ceiling "
        f"{ceiling:,.0f} events/s -> {written / ceiling:.2f}x (target >= 0.6x); "
        f"{occurrences:,} distinct occurrences stored"
    )


def measure_c(quick: bool, cores: int) -> None:
    peak_mb, statuses = figure_c(workers=cores, seconds=5 if quick else 15, concurrency=128)
    refused = statuses.get(503, 0)
    print(
        f"(c) overload (128 connections, default max_inflight 8/worker, {cores} worker(s)): peak RSS "
        f"{peak_mb:,.0f} MB (target < 300 MB) -> {peak_mb / 300:.2f}x of budget; "
        f"answers {dict(sorted(statuses.items()))}, {refused:,} refused with 503 + Retry-After"
    )


def measure_d(quick: bool, baseline: Path | None = None) -> None:
    events = 5_000 if quick else 20_000
    rounds = 1 if quick else 3 if baseline is None else 6
    written, ceiling, ratio, groups, versus = figure_d(events=events, concurrency=4, rounds=rounds, baseline=baseline)
    print(
        f"(d) realistic SDK exceptions (1,000 types, ids in messages, 10-frame stack traces, 5% redelivery), "
        f"{events:,} events, 1 worker, median of {rounds} interleaved round(s): bridge {written:,.0f} error "
        f"events/s, batch-write ceiling {ceiling:,.0f} events/s -> {ratio:.2f}x (target >= 0.6x); {groups:,} groups"
    )
    if versus:
        print(
            f"(d) this tree / the bridge of {baseline}, same rounds: median {statistics.median(versus):.2f}x "
            f"(per round {', '.join(f'{v:.2f}' for v in versus)})"
        )


if __name__ == "__main__":
    sys.exit(main())
