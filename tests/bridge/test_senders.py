"""Who may write as whom: tokens per sender bound to sources, reserved sources, namespaced ids.

Real bridges (``BridgeProcess``), real OTLP/HTTP and OTLP/gRPC clients, real PostgreSQL.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import psycopg2
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from ipai_ops.bridge.auth import RESERVED, SenderConfigError, Senders, parse_senders
from ipai_ops.bridge.settings import Settings
from tests.bridge.conftest import BridgeProcess, error_rows, occurrence_ids, post, unique_letters
from tests.bridge.otlp_factory import span, traces
from tests.conftest import query_rows

ODOO_TOKEN = "odoo-token-0123456789abcdef"
PAYMENTS_TOKEN = "payments-token-0123456789abcdef"
COLLECTOR_TOKEN = "collector-token-0123456789abcdef"
AGENTS_TOKEN = "agents-token-0123456789abcdef"
SENDERS = "; ".join(
    [
        f"odoo-connector:odoo:{ODOO_TOKEN}",
        f"payments:payments,payments-worker:{PAYMENTS_TOKEN}",
        f"collector:*:{COLLECTOR_TOKEN}",
        f"agents:*:{AGENTS_TOKEN}",
    ]
)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def senders_bridge(module_ops_dsn: str) -> Iterator[BridgeProcess]:
    proc = BridgeProcess(module_ops_dsn, env={"IPAI_BRIDGE_TOKENS": SENDERS}).start()
    try:
        yield proc
    finally:
        proc.stop()


def export(bridge: BridgeProcess, request, token: str) -> ExportTraceServiceResponse:
    status, _, answer = post(bridge.url + "/v1/traces", request.SerializeToString(), headers=bearer(token))
    assert status == 200, (status, answer)
    return ExportTraceServiceResponse.FromString(answer)


def group(dsn: str, fingerprint: str) -> dict | None:
    rows = query_rows(
        dsn,
        "SELECT count, status, last_seen, last_seen <= now() + interval '6 minutes' AS not_ahead"
        " FROM ops.agent_errors WHERE fingerprint = %(fp)s",
        {"fp": fingerprint},
    )
    return rows[0] if rows else None


# --------------------------------------------------------------------------- configuration


def test_sender_entries_parse_with_rotation_and_comments():
    senders = parse_senders(
        "# rotation: two tokens of one sender\n"
        f"payments:payments:{PAYMENTS_TOKEN}\n"
        f"payments:payments:{PAYMENTS_TOKEN}-next; collector:*,odoo:{COLLECTOR_TOKEN}"
    )
    by_name = {s.name: s for s in senders}
    assert set(by_name) == {"payments", "collector"}
    assert len(by_name["payments"].tokens) == 2
    assert by_name["collector"].wildcard and by_name["collector"].sources == {"odoo"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("payments:payments", "expected <name>:<source>"),
        ("payments:payments:short", "at least 16 characters"),
        (f"pay ments:payments:{PAYMENTS_TOKEN}", "sender name"),
        (f"shared:payments:{PAYMENTS_TOKEN}", "reserved for IPAI_BRIDGE_TOKEN"),
        (f"payments::{PAYMENTS_TOKEN}", "no source"),
        (f"payments:pay ments:{PAYMENTS_TOKEN}", "is not a source"),
        (f"a:x:{PAYMENTS_TOKEN};a:y:{AGENTS_TOKEN}", "listed twice with different sources"),
    ],
)
def test_bad_sender_entries_are_one_line_without_the_token(text: str, expected: str):
    with pytest.raises(SenderConfigError) as info:
        Senders(parse_senders(text))
    assert expected in str(info.value) and "\n" not in str(info.value)
    assert PAYMENTS_TOKEN not in str(info.value) and AGENTS_TOKEN not in str(info.value)


def test_a_named_source_belongs_to_one_sender_and_a_token_to_one_sender():
    with pytest.raises(SenderConfigError, match="granted to both"):
        Senders(parse_senders(f"a:billing:{PAYMENTS_TOKEN}; b:billing,x:{AGENTS_TOKEN}"))
    with pytest.raises(SenderConfigError, match="share a token"):
        Senders(parse_senders(f"a:x:{PAYMENTS_TOKEN}; b:y:{PAYMENTS_TOKEN}"))
    problems = Settings(tokens=f"a:billing:{PAYMENTS_TOKEN}; b:billing:{AGENTS_TOKEN}").validate()
    assert any("granted to both" in p for p in problems)


def test_decisions_of_the_source_policy():
    senders = Senders(parse_senders(SENDERS))
    by_name = {s.name: s for s in senders.senders}
    assert {"odoo", "github_actions", "agent_run"} == RESERVED
    assert senders.decide(by_name["odoo-connector"], "odoo").allowed
    for name in ("payments", "collector", "agents"):
        assert not senders.decide(by_name[name], "odoo").allowed
        assert not senders.decide(by_name[name], "github_actions").allowed
    assert not senders.decide(by_name["collector"], "payments").allowed  # owned by payments
    assert not senders.decide(by_name["payments"], "billing").allowed  # no *
    own = senders.decide(by_name["payments"], "payments-worker")
    assert own.allowed and not own.shared
    shared = senders.decide(by_name["collector"], "billing")
    assert shared.allowed and shared.shared  # two senders hold *
    alone = Senders(parse_senders(f"collector:*:{COLLECTOR_TOKEN}"))
    assert not alone.decide(alone.senders[0], "billing").shared


def test_the_shared_token_writes_any_non_reserved_source_by_default():
    senders = Senders.from_settings(Settings(token="one-shared-token"))
    [shared] = senders.senders
    assert shared.name == "shared" and senders.authenticate("Bearer one-shared-token") is shared
    assert senders.decide(shared, "billing").allowed and not senders.decide(shared, "odoo").allowed
    widened = Senders.from_settings(Settings(token="one-shared-token", token_sources="*,odoo"))
    assert widened.decide(widened.senders[0], "odoo").allowed


def test_a_tokens_file_is_read(tmp_path):
    path = tmp_path / "senders"
    path.write_text(f"# one per line\npayments:payments:{PAYMENTS_TOKEN}\n")
    senders = Senders.from_settings(Settings(tokens_file=str(path)))
    assert senders.authenticate(f"Bearer {PAYMENTS_TOKEN}").name == "payments"
    problems = Settings(tokens_file=str(tmp_path / "missing")).validate()
    assert any("IPAI_BRIDGE_TOKENS_FILE" in p for p in problems)


# --------------------------------------------------------------------------- through a real bridge


def test_unknown_tokens_are_refused(senders_bridge: BridgeProcess):
    body = traces([span(error="who am i")]).SerializeToString()
    for headers in ({}, bearer("not-a-configured-token-000"), {"Authorization": f"Basic {AGENTS_TOKEN}"}):
        status, response_headers, _ = post(senders_bridge.url + "/v1/traces", body, headers=headers)
        assert status == 401 and response_headers["WWW-Authenticate"].startswith("Bearer")


def test_a_sender_claiming_odoo_cannot_make_odoos_failure_vanish(senders_bridge: BridgeProcess):
    dsn = senders_bridge.dsn
    intent = f"intent:ipai:{unique_letters()}:attempt:1"
    innocent = f"payments failure {unique_letters()}"
    forged = traces(
        [
            span(error=f"forged {unique_letters()}", attributes={"ipai.source": "odoo", "ipai.occurrence_id": intent}),
            span(error=innocent),
        ],
        resource={"service.name": "payments", "ipai.source": "payments"},
    )
    partial = export(senders_bridge, forged, PAYMENTS_TOKEN).partial_success
    assert partial.rejected_spans == 1
    assert "source 'odoo' is reserved" in partial.error_message and "'payments'" in partial.error_message
    assert [row["count"] for row in error_rows(dsn, message=innocent)] == [1]  # the rest is written
    assert not [key for key in occurrence_ids(dsn, source="odoo") if key[1] == intent]

    real = f"odoo failure {unique_letters()}"
    genuine = traces(
        [span(error=real, attributes={"ipai.occurrence_id": intent})],
        resource={"service.name": "odoo", "ipai.source": "odoo"},
    )
    assert export(senders_bridge, genuine, ODOO_TOKEN).partial_success.rejected_spans == 0
    [row] = error_rows(dsn, message=real)
    assert row["count"] == 1 and row["source"] == "odoo"
    assert ("odoo", intent) in occurrence_ids(dsn, source="odoo")  # an owner's id is kept as sent


def test_refusal_over_grpc_is_partial_success_too(senders_bridge: BridgeProcess):
    innocent = f"grpc innocent {unique_letters()}"
    request = traces(
        [span(error="forged", attributes={"ipai.source": "github_actions"}), span(error=innocent)],
        resource={"service.name": "payments-worker", "ipai.source": "payments-worker"},
    )
    with grpc.insecure_channel(f"127.0.0.1:{senders_bridge.grpc_port}") as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        answer = stub.Export(request, metadata=[("authorization", f"Bearer {PAYMENTS_TOKEN}")], timeout=10)
    assert answer.partial_success.rejected_spans == 1
    assert "'github_actions' is reserved" in answer.partial_success.error_message
    assert [row["count"] for row in error_rows(senders_bridge.dsn, message=innocent)] == [1]


def test_a_source_owned_by_another_sender_or_outside_the_grant_is_refused(senders_bridge: BridgeProcess):
    request = traces([span(error=f"as payments {unique_letters()}")], resource={"ipai.source": "payments"})
    partial = export(senders_bridge, request, COLLECTOR_TOKEN).partial_success
    assert partial.rejected_spans == 1 and "belongs to sender 'payments'" in partial.error_message
    request = traces([span(error=f"as billing {unique_letters()}")], resource={"ipai.source": "billing"})
    partial = export(senders_bridge, request, PAYMENTS_TOKEN).partial_success
    assert partial.rejected_spans == 1 and "may not write source 'billing'" in partial.error_message


def test_occurrence_ids_on_shared_sources_are_namespaced_by_sender(senders_bridge: BridgeProcess):
    dsn = senders_bridge.dsn
    source = f"svc{unique_letters()}"
    message = f"shared failure {unique_letters()}"
    request = traces(
        [span(error=message, attributes={"ipai.occurrence_id": "order-42"})], resource={"ipai.source": source}
    )
    export(senders_bridge, request, COLLECTOR_TOKEN)
    export(senders_bridge, request, AGENTS_TOKEN)  # the same id from another sender: not a duplicate
    export(senders_bridge, request, AGENTS_TOKEN)  # a redelivery of one sender: a duplicate
    [row] = error_rows(dsn, message=message)
    assert row["count"] == 2
    assert occurrence_ids(dsn, message=message) == [(source, "agents/order-42"), (source, "collector/order-42")]


def test_a_supplied_fingerprint_cannot_reach_another_senders_group(senders_bridge: BridgeProcess):
    dsn = senders_bridge.dsn
    fingerprint = f"odoo-group-{unique_letters()}"
    odoo = traces(
        [span(error=f"odoo {unique_letters()}", attributes={"ipai.failure.fingerprint": fingerprint})],
        resource={"service.name": "odoo", "ipai.source": "odoo"},
    )
    export(senders_bridge, odoo, ODOO_TOKEN)
    assert group(dsn, fingerprint)["count"] == 1  # the owner's fingerprint is its group key
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE ops.agent_errors SET status = 'resolved', resolved_at = now() WHERE fingerprint = %s",
            (fingerprint,),
        )
    conn.close()
    future = time.time_ns() + 365 * 24 * 3600 * 10**9
    message = f"attach me {unique_letters()}"
    attack = traces(
        [span(error=message, attributes={"ipai.failure.fingerprint": fingerprint}, end_ns=future)],
        resource={"service.name": "odoo", "ipai.source": f"svc{unique_letters()}"},
    )
    assert export(senders_bridge, attack, AGENTS_TOKEN).partial_success.rejected_spans == 0
    after = group(dsn, fingerprint)
    assert after["count"] == 1 and after["status"] == "resolved"
    [own] = [row for row in error_rows(dsn, message=message) if row["fingerprint"].startswith("fpx:agents:")]
    assert own["count"] >= 1
    assert group(dsn, own["fingerprint"])["not_ahead"]  # a future time is clamped to now + 5 min


def test_the_shared_token_may_not_write_reserved_sources_unless_told(module_ops_dsn: str):
    token = "one-shared-token-0123456789"
    message = f"shared odoo {unique_letters()}"
    request = traces([span(error=message)], resource={"ipai.source": "odoo"})
    plain = BridgeProcess(module_ops_dsn, grpc_port=0, env={"IPAI_BRIDGE_TOKEN": token}).start()
    try:
        partial = export(plain, request, token).partial_success
    finally:
        plain.stop()
    assert partial.rejected_spans == 1 and "reserved" in partial.error_message
    assert error_rows(module_ops_dsn, message=message) == []
    widened = BridgeProcess(
        module_ops_dsn, grpc_port=0, env={"IPAI_BRIDGE_TOKEN": token, "IPAI_BRIDGE_TOKEN_SOURCES": "*,odoo"}
    ).start()
    try:
        assert export(widened, request, token).partial_success.rejected_spans == 0
    finally:
        widened.stop()
    assert [row["count"] for row in error_rows(module_ops_dsn, message=message)] == [1]
