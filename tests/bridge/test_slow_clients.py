"""Slow and idle connections (real sockets on 127.0.0.1) must not hold the bridge's request slots.

A request takes a slot only once its body has arrived; headers and bodies have read
deadlines; idle connections are capped. Small limits are set through the bridge's
settings so each test takes a few seconds at most.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from tests.bridge.conftest import BridgeProcess, post, unique_letters
from tests.bridge.otlp_factory import span, traces

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
SLOW_HEADERS = (
    b"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    b"Content-Type: application/x-protobuf\r\nContent-Length: 1000\r\n\r\n"
)


@pytest.fixture(scope="module")
def slow_bridge(module_ops_dsn: str) -> Iterator[BridgeProcess]:
    proc = BridgeProcess(
        module_ops_dsn,
        workers=1,
        max_inflight=2,
        body_timeout_seconds=1,
        idle_timeout_seconds=1,
        max_connections=24,
    ).start()
    try:
        yield proc
    finally:
        proc.stop()


@contextlib.contextmanager
def open_connections(port: int, count: int, payload: bytes) -> Iterator[list[socket.socket]]:
    socks = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            if payload:
                sock.sendall(payload)
            socks.append(sock)
        yield socks
    finally:
        for sock in socks:
            sock.close()


def _good_request() -> bytes:
    return traces([span(error=f"steady {unique_letters()}")], resource={"service.name": "slow"}).SerializeToString()


def _closed_within(sock: socket.socket, seconds: float) -> bytes:
    """What the bridge sent before closing ``sock`` (fails when it stays open past ``seconds``)."""
    sock.settimeout(seconds)
    received = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            received += chunk
    return received


def test_headers_without_body_do_not_take_request_slots(slow_bridge: BridgeProcess):
    # 16 connections announce a 1000-byte body and send none of it (8x max_inflight).
    with open_connections(slow_bridge.http_port, 16, SLOW_HEADERS):
        time.sleep(0.2)  # the bridge has read every request's headers
        status, _, answer = post(slow_bridge.url + "/v1/traces", _good_request())
        assert status == 200, answer
        with grpc.insecure_channel(f"127.0.0.1:{slow_bridge.grpc_port}") as channel:
            stub = trace_service_pb2_grpc.TraceServiceStub(channel)
            stub.Export(traces([span(error=f"grpc steady {unique_letters()}")]), timeout=5)


def test_a_body_that_never_arrives_is_answered_408_and_closed(slow_bridge: BridgeProcess):
    with open_connections(slow_bridge.http_port, 1, SLOW_HEADERS + b"\x0a\x00") as (sock,):
        started = time.monotonic()
        answer = _closed_within(sock, 5)
    assert time.monotonic() - started < 4
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer
    assert "body" in status_pb2.Status.FromString(body).message


@pytest.mark.parametrize(
    "payload", [b"", b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n"], ids=["silent", "partial-headers"]
)
def test_connections_without_complete_headers_are_closed(slow_bridge: BridgeProcess, payload: bytes):
    with open_connections(slow_bridge.http_port, 1, payload) as (sock,):
        started = time.monotonic()
        _closed_within(sock, 5)
    assert time.monotonic() - started < 4


def test_idle_connections_beyond_the_cap_make_room_for_new_ones(slow_bridge: BridgeProcess):
    # More idle connections than max_connections (24): the oldest idle ones are closed,
    # and a new sender is served at once, not after the idle deadline.
    with open_connections(slow_bridge.http_port, 40, b"") as idle:
        time.sleep(0.2)
        started = time.monotonic()
        status, _, answer = post(slow_bridge.url + "/v1/traces", _good_request())
        assert status == 200, answer
        assert time.monotonic() - started < 1
        closed = 0
        for sock in idle[:16]:
            sock.settimeout(0.5)
            with contextlib.suppress(ConnectionResetError, TimeoutError):
                if sock.recv(1) == b"":
                    closed += 1
        assert closed >= 16


def _never_sends(stop: threading.Event) -> Iterator[bytes]:
    stop.wait(30)
    yield from ()


def test_grpc_calls_that_never_send_their_message_hold_nothing_for_long(slow_bridge: BridgeProcess):
    # 20 calls open their stream (headers) and never send the request message.
    stop = threading.Event()
    channels = [grpc.insecure_channel(f"127.0.0.1:{slow_bridge.grpc_port}") for _ in range(20)]
    try:
        stuck = []
        for channel in channels:
            call = channel.stream_unary(EXPORT, request_serializer=None, response_deserializer=None)
            stuck.append(call.future(_never_sends(stop), timeout=20))
        time.sleep(0.5)
        with grpc.insecure_channel(f"127.0.0.1:{slow_bridge.grpc_port}") as channel:
            stub = trace_service_pb2_grpc.TraceServiceStub(channel)
            stub.Export(traces([span(error=f"grpc while stuck {unique_letters()}")]), timeout=5)
        # The bridge ends them itself, long before the client's own 20 s: the message was not
        # received within the body deadline, or no read could start within it (retryable).
        started = time.monotonic()
        for future in stuck:
            with pytest.raises(grpc.RpcError) as info:
                future.result(timeout=10)
            code, details = info.value.code(), info.value.details()
            assert (code, "not received within 1 s" in details) == (grpc.StatusCode.DEADLINE_EXCEEDED, True) or (
                code == grpc.StatusCode.RESOURCE_EXHAUSTED and _retry_delay(info.value) == 1
            ), (code, details)
        assert time.monotonic() - started < 4
    finally:
        stop.set()
        for channel in channels:
            channel.close()


def _retry_delay(error: grpc.RpcError) -> int | None:
    """RetryInfo's delay from the google.rpc.Status details, read as Go's status.FromError does."""
    status = rpc_status.from_call(error)
    if status is None:
        return None
    for detail in status.details:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return info.retry_delay.seconds
    return None


def test_grpc_calls_beyond_the_limit_are_refused_with_retry_info_before_their_message(module_ops_dsn: str):
    """``max_connections`` gRPC calls per worker, counted from their headers on (not gRPC's
    ``maximum_concurrent_rpcs``, whose refusals carry no RetryInfo): the next call is refused
    at once, before its (here 4 MB) message is read, with RESOURCE_EXHAUSTED and RetryInfo in
    the status details, and is accepted once the stuck calls are gone."""
    proc = BridgeProcess(module_ops_dsn, workers=1, max_inflight=2, max_connections=4, body_timeout_seconds=3).start()
    stop = threading.Event()
    channels = [grpc.insecure_channel(f"127.0.0.1:{proc.grpc_port}") for _ in range(4)]
    try:
        stuck = [
            channel.stream_unary(EXPORT, request_serializer=None, response_deserializer=None).future(
                _never_sends(stop), timeout=20
            )
            for channel in channels
        ]
        time.sleep(0.5)
        big = traces([span(error=f"grpc beyond {unique_letters()}", name="n" * 4_000_000)])
        with grpc.insecure_channel(f"127.0.0.1:{proc.grpc_port}") as channel:
            stub = trace_service_pb2_grpc.TraceServiceStub(channel)
            refused = 0
            for _ in range(5):
                started = time.monotonic()
                with pytest.raises(grpc.RpcError) as info:
                    stub.Export(big, timeout=5)
                assert time.monotonic() - started < 1
                assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, info.value.details()
                assert "calls in progress" in info.value.details()
                assert _retry_delay(info.value) == 1
                refused += 1
            assert refused == 5
            for future in stuck:
                with pytest.raises(grpc.RpcError):
                    future.result(timeout=10)
            stub.Export(big, timeout=10)  # the places are free again
    finally:
        stop.set()
        for channel in channels:
            channel.close()
        proc.stop()


def test_bodies_being_received_are_bounded_in_bytes_not_in_connections(module_ops_dsn: str):
    # max_inflight 1 x max_body_bytes 64 KiB: one sender that stalls after 60 KB holds the
    # worker's whole body budget until its body deadline; a second body is answered 503
    # (retryable) instead of being buffered, and is taken once the first one is gone.
    proc = BridgeProcess(
        module_ops_dsn, grpc_port=0, max_inflight=1, max_body_bytes=64 * 1024, body_timeout_seconds=1
    ).start()
    head = (
        b"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/x-protobuf\r\nContent-Length: 65000\r\n\r\n"
    )
    try:
        with open_connections(proc.http_port, 1, head + b"\x00" * 60_000):
            time.sleep(0.3)
            padded = traces([span(error=f"padded {unique_letters()}", name="n" * 10_000)]).SerializeToString()
            status, headers, _ = post(proc.url + "/v1/traces", padded)
            assert status == 503 and headers["Retry-After"] == "1"
            time.sleep(1.5)  # the stalled body's deadline passes
            status, _, answer = post(proc.url + "/v1/traces", padded)
            assert status == 200, answer
    finally:
        proc.stop()
