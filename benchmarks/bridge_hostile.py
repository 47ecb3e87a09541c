#!/usr/bin/env python3
"""Hostile requests against ``ipai-ops bridge serve``: time to answer, what a legitimate sender waited, peak RSS.

    python benchmarks/bridge_hostile.py [--cases slow,json-bomb,...] [--workers 1]

One bridge (default settings except ``--body-timeout-seconds 3``, so the slow-body case
ends in seconds) on 127.0.0.1 with a throwaway ops database. For each hostile case a
legitimate sender posts one small error span every 50 ms from another thread while the
case runs; printed per case:

* the hostile request's answer and the time it took;
* the legitimate requests' median and worst wait, and the worst as a ratio of the median
  wait measured with no attack in the same run (targets: worst <= 3 s);
* the bridge process's peak RSS during the case (VmHWM, reset before each case through
  ``/proc/<pid>/clear_refs``; target < 400 MB); for the large-gRPC cases also the
  peak of 64 and 192 concurrent calls as a ratio of one call's.

Read the figures, not a pass/fail: the machine is small and shared.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import http.client
import json
import os
import socket
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
import psycopg2  # noqa: E402
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse  # noqa: E402
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse  # noqa: E402

from ipai_devtools import scratch  # noqa: E402
from ipai_ops.bridge.otlp import encode_varint  # noqa: E402
from tests.bridge.conftest import BridgeProcess  # noqa: E402
from tests.bridge.otlp_factory import log_record, logs, span, traces  # noqa: E402

MiB = 1024 * 1024


def empty_spans(count: int) -> bytes:
    """ExportTraceServiceRequest of one resource, one scope, ``count`` empty spans (2 bytes each)."""
    scope = b"\x12\x00" * count
    resource = b"\x12" + encode_varint(len(scope)) + scope
    return b"\x0a" + encode_varint(len(resource)) + resource


def nested_in_one_span(count: int, field: int) -> bytes:
    """One ERROR span holding ``count`` empty nested messages of field ``field`` (11: events,
    9: attributes) -- a kept record, so the record cap does not touch them."""
    inner = bytes([field << 3 | 2, 0]) * count
    status = b"\x7a\x02\x18\x02"  # Span.status (15) = {code: ERROR}
    name = b"\x2a\x01x"  # Span.name (5)
    span_bytes = name + inner + status
    span_field = b"\x12" + encode_varint(len(span_bytes)) + span_bytes
    resource = b"\x12" + encode_varint(len(span_field)) + span_field
    return b"\x0a" + encode_varint(len(resource)) + resource


def post(url: str, body: bytes, *, content_type: str = "application/x-protobuf", headers=None, timeout=60):
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": content_type, **(headers or {})}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def describe(status: int, answer: bytes, content_type: str = "application/x-protobuf") -> str:
    if status != 200:
        return f"{status}"
    if content_type == "application/json":
        rejected = json.loads(answer or b"{}").get("partialSuccess", {})
        return f"200, rejected {rejected.get('rejectedSpans') or rejected.get('rejectedLogRecords') or 0}"
    partial = ExportTraceServiceResponse.FromString(answer).partial_success
    return f"200, rejected {partial.rejected_spans}"


# --------------------------------------------------------------------------- the cases


SLOW_HEAD = (
    b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: 1000\r\n\r\n"
)
#: What a case returns once its bodies are built: the call that sends them, timed.
Send = Callable[[], str]


def case_slow_bodies(bridge: BridgeProcess) -> Send:
    """64 connections announce a 1000-byte body and send nothing; answered 408 at the body deadline."""

    def send() -> str:
        socks = []
        for _ in range(64):
            sock = socket.create_connection(("127.0.0.1", bridge.http_port), timeout=10)
            sock.sendall(SLOW_HEAD)
            socks.append(sock)
        answers = []
        for sock in socks:
            try:
                answers.append(sock.recv(12).decode(errors="replace")[9:12])
            except TimeoutError:
                answers.append("none")
            sock.close()
        return f"{answers.count('408')}/64 answered 408"

    return send


def _json_gzip(bridge: BridgeProcess, spans: int) -> Send:
    body = gzip.compress(b'{"resourceSpans":[{"scopeSpans":[{"spans":[' + b",".join([b"{}"] * spans) + b"]}]}]}")

    def send() -> str:
        status, answer = post(
            bridge.url + "/v1/traces", body, content_type="application/json", headers={"Content-Encoding": "gzip"}
        )
        return f"{len(body) // 1024} KB gzip -> {describe(status, answer, 'application/json')}"

    return send


def case_json_bomb(bridge: BridgeProcess) -> Send:
    """A few KB of gzip: 3 million '{}' spans of OTLP/JSON."""
    return _json_gzip(bridge, 3_000_000)


def case_json_under_limit(bridge: BridgeProcess) -> Send:
    """650k '{}' spans: just under the 2 MiB JSON limit."""
    return _json_gzip(bridge, 650_000)


def case_protobuf_empty_spans(bridge: BridgeProcess) -> Send:
    """8 million empty spans: 16 MiB of protobuf inflated from a small gzip body."""
    body = gzip.compress(empty_spans(8_000_000 - 8))

    def send() -> str:
        status, answer = post(bridge.url + "/v1/traces", body, headers={"Content-Encoding": "gzip"})
        return f"{len(body) // 1024} KB gzip -> {describe(status, answer)}"

    return send


def case_grpc_empty_spans(bridge: BridgeProcess) -> Send:
    """The same 16 MiB body over OTLP/gRPC with gzip."""
    body = empty_spans(8_000_000 - 8)

    def send() -> str:
        options = [("grpc.max_send_message_length", 64 * MiB)]
        with grpc.insecure_channel(f"127.0.0.1:{bridge.grpc_port}", options=options) as channel:
            export = channel.unary_unary(
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                request_serializer=None,
                response_deserializer=ExportTraceServiceResponse.FromString,
            )
            try:
                answer = export(body, timeout=60, compression=grpc.Compression.Gzip)
            except grpc.RpcError as exc:
                return f"{exc.code().name}"
        return f"OK, rejected {answer.partial_success.rejected_spans}"

    return send


def large_grpc_message() -> bytes:
    """About 12 MiB of OTLP traces: 3,000 error-free spans with 4 KiB names (decoded, nothing stored)."""
    return traces([span(name=f"{i:05d}" + "n" * 4096) for i in range(3000)]).SerializeToString()


def _grpc_calls(bridge: BridgeProcess, calls: int) -> Send:
    body = large_grpc_message()

    def send() -> str:
        options = [("grpc.max_send_message_length", 64 * MiB)]
        channels = [grpc.insecure_channel(f"127.0.0.1:{bridge.grpc_port}", options=options) for _ in range(8)]
        try:
            futures = []
            for index in range(calls):
                export = channels[index % len(channels)].unary_unary(
                    "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                    request_serializer=None,
                    response_deserializer=None,
                )
                futures.append(export.future(body, timeout=60))
            codes: dict[str, int] = {}
            for future in futures:
                try:
                    future.result()
                    code = "OK"
                except grpc.RpcError as exc:
                    code = exc.code().name
                codes[code] = codes.get(code, 0) + 1
        finally:
            for channel in channels:
                channel.close()
        return f"{calls} x {len(body) // MiB} MiB: " + ", ".join(f"{n} {code}" for code, n in sorted(codes.items()))

    return send


def case_grpc_one_large(bridge: BridgeProcess) -> Send:
    """One 12 MiB gRPC call: the baseline of the next case."""
    return _grpc_calls(bridge, 1)


def case_grpc_many_large(bridge: BridgeProcess) -> Send:
    """64 concurrent 12 MiB gRPC calls: gRPC holds a message being received in memory."""
    return _grpc_calls(bridge, 64)


def case_grpc_more_large(bridge: BridgeProcess) -> Send:
    """192 concurrent 12 MiB gRPC calls (under max_connections, 256)."""
    return _grpc_calls(bridge, 192)


def _nested(bridge: BridgeProcess, field: int) -> Send:
    body = gzip.compress(nested_in_one_span(8_000_000 - 8, field))

    def send() -> str:
        status, answer = post(bridge.url + "/v1/traces", body, headers={"Content-Encoding": "gzip"})
        return f"{len(body) // 1024} KB gzip -> {describe(status, answer)}"

    return send


def case_nested_events(bridge: BridgeProcess) -> Send:
    """8 million empty events inside one ERROR span: 16 MiB of protobuf from a small gzip body."""
    return _nested(bridge, 11)


def case_nested_attributes(bridge: BridgeProcess) -> Send:
    """8 million empty attributes on one ERROR span."""
    return _nested(bridge, 9)


def case_error_logs(bridge: BridgeProcess) -> Send:
    """300k distinct ERROR log records (gzip)."""
    request = logs(
        [log_record(body=f"job {i} failed: worker lost", time_ns=1_700_000_000_000_000_000 + i) for i in range(300_000)]
    )
    body = gzip.compress(request.SerializeToString(), 1)

    def send() -> str:
        status, answer = post(bridge.url + "/v1/logs", body, headers={"Content-Encoding": "gzip"})
        if status != 200:
            return f"{len(body) // 1024} KB gzip -> {status}"
        rejected = ExportLogsServiceResponse.FromString(answer).partial_success.rejected_log_records
        return f"{len(body) // 1024} KB gzip -> 200, rejected {rejected}"

    return send


def case_huge_version(bridge: BridgeProcess) -> Send:
    """A 1 MB service.version on 100 error spans, ten requests."""
    bodies = [
        traces(
            [span(error=f"failure {r} {chr(97 + i % 26)}{chr(97 + i // 26)}") for i in range(100)],
            resource={"service.name": "hostile-version", "service.version": f"{r}." + "9" * MiB},
        ).SerializeToString()
        for r in range(10)
    ]

    def send() -> str:
        statuses = [post(bridge.url + "/v1/traces", body)[0] for body in bodies]
        return f"10 requests: statuses {sorted(set(statuses))}"

    return send


def case_numeric_overflow(bridge: BridgeProcess) -> Send:
    """A batch of 100 errors, one of an error resolved in a 140k-digit release."""
    service = "hostile-overflow"
    first = traces([span(error="poisoned failure")], resource={"service.name": service, "service.version": "2"})
    post(bridge.url + "/v1/traces", first.SerializeToString())
    with psycopg2.connect(bridge.dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE ops.agent_errors SET status = 'resolved', resolved_in_version = %s WHERE service = %s",
            ("1." + "9" * 140_000, service),
        )
    conn.close()
    request = traces(
        [span(error="poisoned failure")]
        + [span(error=f"innocent {chr(97 + i % 26)}{chr(97 + i // 26)}") for i in range(99)],
        resource={"service.name": service, "service.version": "2"},
    )
    body = request.SerializeToString()

    def send() -> str:
        status, answer = post(bridge.url + "/v1/traces", body)
        return describe(status, answer)

    return send


CASES: dict[str, Callable[[BridgeProcess], Send]] = {
    "slow": case_slow_bodies,
    "json-bomb": case_json_bomb,
    "json-2mib": case_json_under_limit,
    "protobuf-8m-spans": case_protobuf_empty_spans,
    "grpc-8m-spans": case_grpc_empty_spans,
    "grpc-1x12mib": case_grpc_one_large,
    "grpc-64x12mib": case_grpc_many_large,
    "grpc-192x12mib": case_grpc_more_large,
    "nested-8m-events": case_nested_events,
    "nested-8m-attributes": case_nested_attributes,
    "logs-300k": case_error_logs,
    "version-1mb": case_huge_version,
    "numeric-overflow": case_numeric_overflow,
}


# --------------------------------------------------------------------------- measuring


class LegitSender(threading.Thread):
    """One small error span every 50 ms over a fresh connection; records each wait."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.waits: list[float] = []
        self.failures: list[int] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stopping.is_set():
            n += 1
            body = traces(
                [span(error=f"legit failure {n % 7}")], resource={"service.name": "legit"}
            ).SerializeToString()
            started = time.perf_counter()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", int(self.url.rsplit(":", 1)[1]), timeout=60)
                conn.request("POST", "/v1/traces", body=body, headers={"Content-Type": "application/x-protobuf"})
                status = conn.getresponse().status
                conn.close()
            except OSError:
                status = 0
            self.waits.append(time.perf_counter() - started)
            if status != 200:
                self.failures.append(status)
            self.stopping.wait(0.05)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak(pid: int) -> None:
    with contextlib.suppress(OSError):  # else the peak covers every case so far
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def measure(bridge: BridgeProcess, prepare: Callable[[BridgeProcess], Send]) -> tuple[str, float, LegitSender, float]:
    """Build the case's bodies, then send them while a legitimate sender runs."""
    run = prepare(bridge)
    assert bridge.proc is not None
    reset_peak(bridge.proc.pid)
    legit = LegitSender(bridge.url)
    legit.start()
    time.sleep(0.2)
    started = time.perf_counter()
    outcome = run()
    took = time.perf_counter() - started
    time.sleep(0.2)
    legit.stopping.set()
    legit.join()
    return outcome, took, legit, peak_rss_mb(bridge.proc.pid)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated, of: " + ", ".join(CASES))
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    names = [name.strip() for name in args.cases.split(",") if name.strip()]
    unknown = [name for name in names if name not in CASES]
    if unknown:
        parser.error(f"unknown case(s): {', '.join(unknown)}")
    with scratch.throwaway_database("ipai_bench", migrate=True) as dsn:
        # Through the environment, so the same script also measures an older bridge.
        env = {"IPAI_BRIDGE_BODY_TIMEOUT_SECONDS": "3"}
        bridge = BridgeProcess(dsn, workers=args.workers, env=env).start()
        try:
            _, _, quiet, _ = measure(bridge, lambda b: lambda: time.sleep(2) or "")
            base = statistics.median(quiet.waits)
            print(f"bridge hostile inputs, {os.cpu_count()} cores, {args.workers} worker(s), loopback")
            print(f"legitimate request with no attack: median wait {base * 1000:.1f} ms")
            header = ("case", "answer", "took", "legit median", "legit worst", "ratio", "peak RSS")
            print("{:<20} {:<34} {:>7} {:>13} {:>12} {:>7} {:>9}".format(*header))
            peaks = {}
            for name in names:
                outcome, took, legit, rss = measure(bridge, CASES[name])
                peaks[name] = rss
                median, worst = statistics.median(legit.waits), max(legit.waits)
                failed = (
                    f" ({len(legit.failures)} legit failed: {sorted(set(legit.failures))})" if legit.failures else ""
                )
                print(
                    f"{name:<20} {outcome:<34} {took:>6.2f}s {median * 1000:>11.1f}ms {worst * 1000:>10.1f}ms"
                    f" {worst / base:>6.1f}x {rss:>7.0f}MB{failed}",
                    flush=True,
                )
            for many in ("grpc-64x12mib", "grpc-192x12mib"):
                if {"grpc-1x12mib", many} <= peaks.keys():
                    ratio = peaks[many] / peaks["grpc-1x12mib"]
                    print(f"peak RSS, {many.split('-')[1]} concurrent gRPC calls vs one: {ratio:.2f}x")
        finally:
            bridge.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
