"""Sender strings the bridge keeps are capped, cache keys are digests, occurrence times are clamped."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

from ipai_ops.bridge.extract import MAX_AGE_SECONDS, MAX_SERVICE_CHARS, MAX_SKEW_SECONDS, Extractor
from tests.bridge.conftest import BridgeProcess, error_rows, post, unique_letters
from tests.bridge.otlp_factory import span, traces
from tests.conftest import query_rows

MB = 1024 * 1024


def test_megabyte_resource_attributes_are_stored_capped(bridge: BridgeProcess):
    service = f"huge{unique_letters()}"
    resource = {
        "service.name": service + "n" * MB,
        "service.version": "1." + "9" * MB,
        "deployment.environment.name": "e" * MB,
    }
    body = traces(
        [span(error=f"failure {service} {i}", name="s" * 10_000) for i in range(20)], resource=resource
    ).SerializeToString()
    status, _, answer = post(bridge.url + "/v1/traces", body)
    assert status == 200, answer
    rows = query_rows(
        bridge.dsn,
        "SELECT service, last_service_version, sample FROM ops.agent_errors WHERE service LIKE %s",
        (service + "%",),
    )
    assert rows
    for row in rows:
        assert len(row["service"]) == MAX_SERVICE_CHARS
        assert len(row["last_service_version"]) == MAX_SERVICE_CHARS
        context = row["sample"]["context"]
        assert len(context["service_version"]) <= MAX_SERVICE_CHARS and len(context["env"]) <= MAX_SERVICE_CHARS
        assert len(json.dumps(row["sample"])) < 16_000


def _seen(dsn: str, service: str) -> tuple[datetime, datetime]:
    [row] = query_rows(dsn, "SELECT first_seen, last_seen FROM ops.agent_errors WHERE service = %s", (service,))
    return row["first_seen"], row["last_seen"]


def test_occurrence_times_are_clamped_to_a_window_around_now(bridge: BridgeProcess):
    service = f"clock{unique_letters()}"
    year_2100 = 4_102_444_800 * 10**9
    year_1971 = 31_536_000 * 10**9
    spans = [span(error=f"skewed clock {service}", end_ns=t) for t in (year_2100, year_1971)]
    before = datetime.now(timezone.utc)
    status, _, answer = post(
        bridge.url + "/v1/traces", traces(spans, resource={"service.name": service}).SerializeToString()
    )
    after = datetime.now(timezone.utc)
    assert status == 200, answer
    first, last = _seen(bridge.dsn, service)
    assert before - timedelta(seconds=MAX_AGE_SECONDS + 1) <= first <= after - timedelta(seconds=MAX_AGE_SECONDS - 1)
    assert before + timedelta(seconds=MAX_SKEW_SECONDS - 1) <= last <= after + timedelta(seconds=MAX_SKEW_SECONDS + 1)
    assert error_rows(bridge.dsn, service=service)[0]["count"] == 2


def test_times_inside_the_window_are_kept_exactly(bridge: BridgeProcess):
    service = f"recent{unique_letters()}"
    an_hour_ago = (time.time_ns() // 1000 - 3_600_000_000) * 1000
    body = traces([span(error=f"recent {service}", end_ns=an_hour_ago)], resource={"service.name": service})
    assert post(bridge.url + "/v1/traces", body.SerializeToString())[0] == 200
    first, last = _seen(bridge.dsn, service)
    assert first == last == datetime.fromtimestamp(an_hour_ago / 1e9, tz=timezone.utc)


def test_cache_keys_are_digests_whatever_the_sender_strings(registry):
    extractor = Extractor(registry)
    for i in range(30):
        letters = "".join(chr(97 + (i * 7 + k) % 26) for k in range(8))
        request = traces(
            [
                span(
                    exceptions=[
                        {
                            "exception.type": "E" * 100_000 + letters,
                            "exception.message": f"boom {letters} " + "m" * 60_000,
                            "exception.stacktrace": "Traceback\n" + "x" * 60_000,
                        }
                    ]
                )
            ],
            resource={"service.name": "s" * MB, "service.version": letters + "v" * MB},
        )
        assert len(extractor.traces(request).occurrences) == 1
    for cache in (extractor._templates, extractor._exact, extractor._digit_blind):
        # 64-bit keyed hashes: an entry costs the same whatever the strings it was made from
        assert cache and all(isinstance(key, int) and -(2**63) <= key < 2**63 for key in cache)
