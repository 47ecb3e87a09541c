"""A record PostgreSQL refuses (a data error) is rejected on its own; the rest of the batch is stored."""

from __future__ import annotations

import json

import psycopg2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from tests.bridge.conftest import BridgeProcess, error_rows, post, unique_letters
from tests.bridge.otlp_factory import span, traces


def _database_refuses(dsn: str, service: str) -> None:
    """PostgreSQL refuses this service's records from now on: a real CHECK constraint (added
    NOT VALID, so the rows already stored stay), as any data error of a record would. (A
    140,000-digit release made the release comparison overflow until migration 0008 bounded
    it; the bridge's handling must not depend on which data error it meets.)"""
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            f"ALTER TABLE ops.agent_errors ADD CONSTRAINT refuse_{service} CHECK (service <> %s) NOT VALID",
            (service,),
        )
    conn.close()


def test_a_record_the_database_refuses_is_rejected_and_innocent_records_stored(bridge: BridgeProcess):
    poisoned = f"poisoned{unique_letters()}"
    innocent = f"innocent{unique_letters()}"
    resources = {"service.version": "2.0"}
    first = traces([span(error=f"failure in {poisoned}")], resource={"service.name": poisoned, **resources})
    assert post(bridge.url + "/v1/traces", first.SerializeToString())[0] == 200
    _database_refuses(bridge.dsn, poisoned)
    # One request: 2 new occurrences of the error the database now refuses between 9 innocent ones.
    request = traces(
        [span(error=f"failure in {innocent} {'abc'[i % 3]}") for i in range(5)],
        resource={"service.name": innocent, **resources},
    )
    poisoned_spans = traces(
        [span(error=f"failure in {poisoned}") for _ in range(2)], resource={"service.name": poisoned, **resources}
    )
    request.resource_spans.extend(poisoned_spans.resource_spans)
    request.resource_spans.extend(
        traces(
            [span(error=f"failure in {innocent} {'abc'[i % 3]}") for i in range(4)],
            resource={"service.name": innocent, **resources},
        ).resource_spans
    )
    status, _, answer = post(bridge.url + "/v1/traces", request.SerializeToString())
    assert status == 200, answer
    partial = ExportTraceServiceResponse.FromString(answer).partial_success
    assert partial.rejected_spans == 2
    assert "refused by the database" in partial.error_message
    assert sum(row["count"] for row in error_rows(bridge.dsn, service=innocent)) == 9
    [row] = error_rows(bridge.dsn, service=poisoned)
    assert row["count"] == 1  # only the first, before the database refused it


def test_json_requests_get_the_same_answer(bridge: BridgeProcess):
    poisoned = f"poisonedjson{unique_letters()}"
    first = traces([span(error=f"failure in {poisoned}")], resource={"service.name": poisoned, "service.version": "2"})
    assert post(bridge.url + "/v1/traces", first.SerializeToString())[0] == 200
    _database_refuses(bridge.dsn, poisoned)
    doc = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [
                        {"key": "service.name", "value": {"stringValue": poisoned}},
                        {"key": "service.version", "value": {"stringValue": "2"}},
                    ]
                },
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "ab" * 16,
                                "spanId": "cd" * 8,
                                "status": {"code": 2, "message": f"failure in {poisoned}"},
                            }
                        ]
                    }
                ],
            }
        ]
    }
    status, headers, answer = post(bridge.url + "/v1/traces", json.dumps(doc).encode(), content_type="application/json")
    assert status == 200 and headers["Content-Type"].startswith("application/json"), answer
    assert json.loads(answer)["partialSuccess"]["rejectedSpans"] == "1"
