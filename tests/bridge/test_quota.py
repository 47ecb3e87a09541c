"""Budgets per sender and source: one noisy service cannot starve the others.

The unit tests drive :class:`Quota` with a clock they set (no sleeping, no timing). The
bridge tests use an hourly budget (clock-aligned windows) and start away from the turn of
an hour, so the window cannot turn between two requests of a test.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from ipai_ops.bridge.quota import MAX_KEYS, LocalLedger, PostgresLedger, Quota
from tests.bridge.conftest import BridgeProcess, TcpProxy, error_rows, post, proxied_dsn, unique_letters
from tests.bridge.otlp_factory import span, traces
from tests.conftest import query_rows

PAYMENTS_TOKEN = "payments-token-0123456789abcdef"
COLLECTOR_TOKEN = "collector-token-0123456789abcdef"
SENDERS = f"payments:payments:{PAYMENTS_TOKEN}; collector:*:{COLLECTOR_TOKEN}"
PER_HOUR = 3


class Clock:
    """Seconds since the epoch, moved by the test."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --------------------------------------------------------------------------- the budget itself


def test_a_minute_budget_refuses_beyond_it_and_says_when_it_turns():
    clock = Clock(1_000_000 * 60 + 15.5)  # 15.5 s into a minute
    quota = Quota(per_minute=5, clock=clock)
    key = ("collector", "billing")
    assert quota.take(key, 3) == 3
    assert quota.take(key, 4) == 2  # only what fits is charged
    assert quota.take(key, 1) == 0
    assert quota.retry_after(key) == 45  # ceil(60 - 15.5)
    assert quota.take(("collector", "orders"), 5) == 5  # another source has its own budget
    assert quota.take(("agents", "billing"), 5) == 5  # and another sender
    clock.now += 45
    assert quota.retry_after(key) == 0 and quota.take(key, 9) == 5


def test_an_hour_budget_holds_across_minutes():
    clock = Clock(500 * 3600 + 610.0)  # 10 min 10 s into an hour
    quota = Quota(per_minute=10, per_hour=12, clock=clock)
    key = ("payments", "payments")
    assert quota.take(key, 10) == 10
    assert quota.take(key, 1) == 0
    assert quota.retry_after(key) == 50  # the minute turns first
    clock.now += 60
    assert quota.take(key, 10) == 2
    assert quota.retry_after(key) == 3600 - 670  # now the hour blocks
    clock.now += 3600 - 670
    assert quota.take(key, 1) == 1


def test_what_is_not_stored_is_given_back():
    quota = Quota(per_hour=4, clock=Clock(7200.0))
    key = ("payments", "payments")
    assert quota.take(key, 4) == 4
    quota.give_back(key, 3)
    assert quota.take(key, 5) == 3


def test_exhausted_is_the_soonest_source_with_room():
    clock = Clock(3600.0 * 10)
    quota = Quota(per_hour=1, clock=clock)
    assert quota.exhausted("payments", ["a", "b"]) == 0
    quota.take(("payments", "a"), 1)
    assert quota.exhausted("payments", ["a", "b"]) == 0  # b has room
    quota.take(("payments", "b"), 1)
    assert quota.exhausted("payments", ["a", "b"]) == 3600


def test_no_budget_means_no_limit_and_keys_are_bounded():
    assert Quota().take(("any", "thing"), 10**6) == 10**6
    quota = Quota(per_minute=1, clock=Clock(60.0))
    for index in range(MAX_KEYS + 100):
        quota.take(("collector", f"source{index}"), 1)
    assert len(quota._slices) == MAX_KEYS


def test_slices_make_the_ledger_rarely_asked_and_unspent_slices_go_back_to_the_hour():
    clock = Clock(100 * 3600 + 30.0)
    asked = []

    class Counting(LocalLedger):
        def take(self, key, **kwargs):
            asked.append(kwargs)
            return super().take(key, **kwargs)

    quota = Quota(per_hour=160, ledger=Counting(clock), clock=clock)
    key = ("collector", "billing")
    assert quota.slice == 10
    assert [quota.take(key, 1) for _ in range(20)] == [1] * 20
    assert len(asked) == 2  # one slice of 10 per 10 occurrences
    assert quota.take(key, 3) == 3  # 7 left in the slice
    clock.now += 60  # the minute turns: the 7 unspent go back to the hour
    assert quota.take(key, 1) == 1
    assert asked[-1]["unspent"] == 7
    assert quota.take(key, 1000) == 160 - 24  # exactly what the hour has left


# --------------------------------------------------------------------------- one budget for all workers


def _away_from_the_turn_of(seconds: int, margin: float) -> None:
    left = seconds - time.time() % seconds
    if left < margin:
        time.sleep(left + 0.5)


@pytest.mark.parametrize("slices", [True, False], ids=["quota-slices", "ledger-one-by-one"])
def test_the_database_grants_exactly_the_budget_to_concurrent_workers(ops_dsn: str, slices: bool):
    """Eight workers (each its own connection, as bridge processes have) take one
    (sender, source) budget at the same time, through Quota's slices or straight from the
    ledger one occurrence per round trip (the most contention on the row): together they
    get exactly the budget."""
    _away_from_the_turn_of(3600, 30)
    per_hour = 500
    ledgers = [PostgresLedger(ops_dsn) for _ in range(8)]
    quotas = [Quota(per_hour=per_hour, ledger=ledger) for ledger in ledgers]
    accepted = [0] * len(quotas)
    start = threading.Barrier(len(quotas))

    def take_one(index: int) -> int:
        if slices:
            return quotas[index].take(("collector", "billing"), 1)
        grant = ledgers[index].take(
            ("collector", "billing"), want=1, slice_=1, per_minute=0, per_hour=per_hour, unspent=0, unspent_hour=-1
        )
        return grant.granted

    def worker(index: int) -> None:
        start.wait()
        # Until refused: then its own slice is spent and the database has no room left.
        while take_one(index):
            accepted[index] += 1

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(len(quotas))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for quota in quotas:
        quota.close()
    assert sum(accepted) == per_hour
    assert sum(1 for count in accepted if count) > 1
    [row] = query_rows(ops_dsn, "SELECT in_hour FROM ops.bridge_quota WHERE sender = 'collector'")
    assert row["in_hour"] == per_hour


def test_the_database_and_the_local_ledger_follow_one_rule(ops_dsn: str):
    """ops.bridge_quota_take (SQL) and LocalLedger (Python) grant the same slices."""
    _away_from_the_turn_of(60, 10)
    limits = {"per_minute": 40, "per_hour": 26}
    steps = [(3, 8, 0), (5, 8, 0), (1, 8, 0), (9, 8, 0), (4, 8, 3), (9, 8, 0), (1, 8, 0)]
    answers = []
    database = PostgresLedger(ops_dsn)
    try:
        for ledger in (LocalLedger(), database):
            hour = -1
            seen = []
            for want, slice_, unspent in steps:
                grant = ledger.take(
                    ("collector", "billing"), want=want, slice_=slice_, unspent=unspent, unspent_hour=hour, **limits
                )
                hour = grant.hour_id
                seen.append((grant.granted, grant.minute_full, grant.hour_full))
            answers.append(seen)
    finally:
        database.close()
    assert answers[0] == answers[1]
    # slices of 8, a quarter of what is left near the limit, the 3 unspent back to the hour
    assert [granted for granted, _, _ in answers[0]] == [7, 5, 4, 9, 4, 0, 0]


def test_two_bridges_share_one_budget_and_count_exactly_what_they_accept(ops_dsn: str):
    """Two bridge processes (replicas: one PostgreSQL, nothing else shared) take turns with
    one sender: together they accept its hourly budget once, not once each, and every
    accepted occurrence is counted."""
    _away_from_the_turn_of(3600, 60)
    per_hour = 40
    env = {"IPAI_BRIDGE_TOKENS": SENDERS, "IPAI_BRIDGE_QUOTA_PER_HOUR": str(per_hour)}
    bridges = [BridgeProcess(ops_dsn, grpc_port=0, env=env).start() for _ in range(2)]
    tag = f"pay{unique_letters()}"
    accepted = [0, 0]
    try:
        for round_ in range(20):
            index = round_ % 2
            status, _, answer = _send(
                bridges[index], _errors(3, tag + "abcdefghijklmnopqrst"[round_], "payments"), PAYMENTS_TOKEN
            )
            if status == 200:
                accepted[index] += 3 - ExportTraceServiceResponse.FromString(answer).partial_success.rejected_spans
            else:
                assert status == 429, answer
    finally:
        for bridge in bridges:
            bridge.stop()
    assert sum(accepted) == per_hour, accepted  # per worker it was 2 x 40
    assert min(accepted) > 0
    [row] = query_rows(
        ops_dsn,
        "SELECT coalesce(sum(count), 0) AS total FROM ops.agent_errors WHERE service LIKE %s",
        (f"{tag}%",),
    )
    assert row["total"] == per_hour


# --------------------------------------------------------------------------- through a real bridge


def _away_from_the_hour_turn() -> None:
    """Clock-aligned windows: do not start a test in the last 30 s of an hour."""
    left = 3600 - time.time() % 3600
    if left < 30:
        time.sleep(left + 0.5)


@pytest.fixture
def quota_bridge(ops_dsn: str) -> Iterator[BridgeProcess]:
    _away_from_the_hour_turn()
    env = {"IPAI_BRIDGE_TOKENS": SENDERS, "IPAI_BRIDGE_QUOTA_PER_HOUR": str(PER_HOUR)}
    proc = BridgeProcess(ops_dsn, env=env).start()
    try:
        yield proc
    finally:
        proc.stop()


def _errors(n: int, tag: str, source: str | None = None):
    resource = {"service.name": tag, **({"ipai.source": source} if source else {})}
    return traces([span(error=f"failure {tag} {'abcdefgh'[i]}") for i in range(n)], resource=resource)


def _send(bridge: BridgeProcess, request, token: str):
    return post(bridge.url + "/v1/traces", request.SerializeToString(), headers={"Authorization": f"Bearer {token}"})


def _stored(dsn: str, service: str) -> int:
    return sum(row["count"] for row in error_rows(dsn, service=service))


def test_occurrences_beyond_the_budget_are_refused_and_counts_stay_exact(quota_bridge: BridgeProcess):
    tag = f"pay{unique_letters()}"
    status, _, answer = _send(quota_bridge, _errors(5, tag, "payments"), PAYMENTS_TOKEN)
    assert status == 200, answer
    partial = ExportTraceServiceResponse.FromString(answer).partial_success
    assert partial.rejected_spans == 2 and "over the quota of sender 'payments'" in partial.error_message
    assert _stored(quota_bridge.dsn, tag) == PER_HOUR

    # Nothing fits any more: 429 + Retry-After, the sender keeps the data.
    status, headers, _ = _send(quota_bridge, _errors(1, tag, "payments"), PAYMENTS_TOKEN)
    assert status == 429 and 1 <= int(headers["Retry-After"]) <= 3600
    assert _stored(quota_bridge.dsn, tag) == PER_HOUR


def test_a_sender_over_budget_on_every_source_is_refused_before_its_body(quota_bridge: BridgeProcess):
    tag = f"pay{unique_letters()}"
    assert _send(quota_bridge, _errors(PER_HOUR, tag, "payments"), PAYMENTS_TOKEN)[0] == 200
    with socket.create_connection(("127.0.0.1", quota_bridge.http_port), timeout=20) as conn:
        conn.sendall(
            b"POST /v1/traces HTTP/1.1\r\nHost: bridge\r\nContent-Type: application/x-protobuf\r\n"
            + f"Authorization: Bearer {PAYMENTS_TOKEN}\r\nContent-Length: 100000\r\n\r\n".encode()
        )
        head = conn.recv(4096).decode("latin-1")  # no byte of the body was sent
    assert head.startswith("HTTP/1.1 429"), head
    assert "Retry-After: " in head


def test_one_noisy_service_does_not_starve_the_others(quota_bridge: BridgeProcess):
    noisy, quiet = f"noisy{unique_letters()}", f"quiet{unique_letters()}"
    request = _errors(5, noisy, noisy)
    request.resource_spans.extend(_errors(2, quiet, quiet).resource_spans)
    status, _, answer = _send(quota_bridge, request, COLLECTOR_TOKEN)
    assert status == 200
    assert ExportTraceServiceResponse.FromString(answer).partial_success.rejected_spans == 2
    mixed = _errors(2, noisy, noisy)
    mixed.resource_spans.extend(_errors(1, quiet, quiet).resource_spans)
    status, _, answer = _send(quota_bridge, mixed, COLLECTOR_TOKEN)
    assert status == 200
    assert ExportTraceServiceResponse.FromString(answer).partial_success.rejected_spans == 2
    assert (_stored(quota_bridge.dsn, noisy), _stored(quota_bridge.dsn, quiet)) == (PER_HOUR, 3)


def test_grpc_answers_resource_exhausted_with_retry_info_in_the_status_details(quota_bridge: BridgeProcess):
    noisy = f"noisy{unique_letters()}"
    metadata = [("authorization", f"Bearer {COLLECTOR_TOKEN}")]
    with grpc.insecure_channel(f"127.0.0.1:{quota_bridge.grpc_port}") as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        stub.Export(_errors(PER_HOUR, noisy, noisy), metadata=metadata, timeout=10)
        with pytest.raises(grpc.RpcError) as info:
            stub.Export(_errors(1, noisy, noisy), metadata=metadata, timeout=10)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    status = rpc_status.from_call(info.value)  # what Go's status.FromError reads
    assert status is not None
    [detail] = status.details
    retry = error_details_pb2.RetryInfo()
    assert detail.Unpack(retry)
    assert 1 <= retry.retry_delay.seconds <= 3600
    assert _stored(quota_bridge.dsn, noisy) == PER_HOUR


def test_a_write_that_does_not_commit_gives_its_charge_back(ops_dsn: str):
    _away_from_the_hour_turn()
    relay = TcpProxy(("127.0.0.1", 5432))
    relay.up()
    env = {"IPAI_BRIDGE_TOKENS": SENDERS, "IPAI_BRIDGE_QUOTA_PER_HOUR": "2"}
    bridge = BridgeProcess(proxied_dsn(ops_dsn, relay.port), grpc_port=0, env=env).start()
    try:
        tag = f"pay{unique_letters()}"
        relay.down()
        for _ in range(3):
            assert _send(bridge, _errors(2, tag, "payments"), PAYMENTS_TOKEN)[0] == 503
        relay.up()
        status, _, answer = _send(bridge, _errors(3, tag, "payments"), PAYMENTS_TOKEN)
        assert status == 200
        assert ExportTraceServiceResponse.FromString(answer).partial_success.rejected_spans == 1
    finally:
        bridge.stop()
        relay.down()
    assert _stored(ops_dsn, tag) == 2
