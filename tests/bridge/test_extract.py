"""Selection, occurrence ids, classification precedence and the decode-extract fuzz test."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from ipai_ops.bridge import otlp
from ipai_ops.bridge.extract import Extractor
from ipai_ops.envelope import envelope_errors
from tests.bridge.otlp_factory import log_record, logs, span, traces

TRACE = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
SPAN = bytes.fromhex("b7ad6b7169203331")


@pytest.fixture(scope="module")
def extractor(registry):
    return Extractor(registry, default_source="otlp")


def test_error_span_without_exception_event_is_one_occurrence(extractor):
    out = extractor.traces(traces([span(error="it broke", trace_id=TRACE, span_id=SPAN)]))
    [occ] = out.occurrences
    assert occ.occurrence_id == f"span:{TRACE.hex()}:{SPAN.hex()}"
    assert occ.message == "it broke"
    assert (occ.trace_id, occ.span_id) == (TRACE.hex(), SPAN.hex())
    assert occ.source == "otlp" and occ.service == "svc"
    assert envelope_errors(occ.stored_sample()) == []


def test_error_span_with_exception_events_counts_each_event_not_the_span(extractor):
    s = span(
        error="failed",
        trace_id=TRACE,
        span_id=SPAN,
        exceptions=[
            {"exception.type": "ValueError", "exception.message": "bad 1"},
            {"exception.type": "KeyError", "exception.message": "missing"},
        ],
    )
    s.events.add(name="retry")  # not an exception event: index 2 is skipped, ids stay stable
    out = extractor.traces(traces([s]))
    assert [o.occurrence_id for o in out.occurrences] == [
        f"event:{TRACE.hex()}:{SPAN.hex()}:0",
        f"event:{TRACE.hex()}:{SPAN.hex()}:1",
    ]
    assert [o.error_type for o in out.occurrences] == ["ValueError", "KeyError"]


def test_exception_event_on_an_ok_span_counts_and_plain_spans_do_not(extractor):
    out = extractor.traces(
        traces([span(exceptions=[{"exception.type": "E", "exception.message": "m"}]), span(), span()])
    )
    assert len(out.occurrences) == 1


def test_explicit_code_wins_then_error_type_then_signatures(extractor, registry):
    code = "INTENT.LEASE_EXPIRED"
    assert code in registry
    out = extractor.traces(
        traces(
            [
                span(error="x", attributes={"ipai.failure.code": code}),
                span(error="x", attributes={"error.type": "GITHUB.RATE_LIMITED"}),
                span(error="psycopg2.OperationalError: could not connect to server"),
                span(error="nothing known", attributes={"error.type": "500"}),
            ]
        )
    )
    codes = [o.code for o in out.occurrences]
    assert codes[0] == code
    assert codes[1] == "GITHUB.RATE_LIMITED"
    assert codes[2] == "TRANSPORT.DATABASE_UNAVAILABLE"
    assert codes[3] == registry.fallback.code
    assert out.occurrences[0].severity == registry[code].severity


def test_source_fingerprint_and_occurrence_id_from_attributes(extractor):
    resource = {"service.name": "odoo", "service.version": "19.0.1", "ipai.source": "odoo"}
    s = span(
        exceptions=[
            {
                "exception.type": "E",
                "exception.message": "m",
                "ipai.occurrence_id": "intent:42:attempt:1",
                "ipai.failure.fingerprint": "fp1:abc",
            }
        ]
    )
    [occ] = extractor.traces(traces([s], resource=resource)).occurrences
    assert (occ.source, occ.occurrence_id, occ.fingerprint) == ("odoo", "intent:42:attempt:1", "fp1:abc")
    assert (occ.service, occ.service_version) == ("odoo", "19.0.1")
    [occ] = extractor.traces(traces([span(error="x", attributes={"ipai.source": "ci"})], resource={})).occurrences
    assert (occ.source, occ.service) == ("ci", "unknown_service")


def test_invalid_ids_are_rejected_as_partial_success(extractor):
    out = extractor.traces(traces([span(error="x", trace_id=b"\x01" * 3), span(error="y")]))
    assert len(out.occurrences) == 1
    assert out.rejected == {"invalid_id": 1}
    assert "1 record(s) not stored" in out.message()


def test_logs_selection_and_ids(extractor):
    records = [
        log_record(body="db down", trace_id=TRACE, span_id=SPAN),
        log_record(body="fine", severity=9, severity_text="INFO"),
        log_record(body="fatal", severity=21, severity_text="FATAL"),
        log_record(body="text only", severity=0, severity_text="error"),
        log_record(body="audit", attributes={"event.name": "run.state"}),
    ]
    audit = log_record(body="audit 2")
    audit.event_name = "run.cancel"
    out = extractor.logs(logs([*records, audit]))
    assert [o.message for o in out.occurrences] == ["db down", "fatal", "text only"]
    first = out.occurrences[0].occurrence_id
    assert first.startswith(f"log:{TRACE.hex()}:{SPAN.hex()}:1700000000000000000:")
    assert out.occurrences[1].occurrence_id.startswith("log:" + "0" * 32 + ":" + "0" * 16 + ":")
    again = extractor.logs(logs([log_record(body="db down", trace_id=TRACE, span_id=SPAN)]))
    assert again.occurrences[0].occurrence_id == first


def test_occurrence_times_are_exact_to_the_microsecond(extractor):
    times = [1_700_000_000_123_456_789, 1_700_000_000_999_999_999]
    out = extractor.logs(logs([log_record(body=f"db down {i}", time_ns=t) for i, t in enumerate(times)]))
    stamps = [o.occurred_at for o in out.occurrences]
    assert stamps == ["2023-11-14T22:13:20.123456Z", "2023-11-14T22:13:20.999999Z"]


def test_log_exception_attributes_and_structured_body(extractor):
    record = log_record(attributes={"exception.type": "TimeoutError", "exception.message": "upstream timed out"})
    record.body.CopyFrom(AnyValue())
    record.body.kvlist_value.values.add(key="k", value=AnyValue(string_value="v"))
    [occ] = extractor.logs(logs([record])).occurrences
    assert (occ.error_type, occ.message) == ("TimeoutError", "upstream timed out")


def test_huge_values_are_capped_in_the_row_and_sample(extractor):
    big = "x" * 2_000_000
    [occ] = extractor.traces(
        traces([span(exceptions=[{"exception.type": "E", "exception.message": big, "exception.stacktrace": big}])])
    ).occurrences
    assert len(occ.message) < 2000
    assert len(str(occ.stored_sample())) < 12_000
    assert envelope_errors(occ.stored_sample()) == []


def test_secrets_are_redacted(extractor):
    [occ] = extractor.traces(traces([span(error="login failed password=hunter2 for bob")])).occurrences
    assert "hunter2" not in occ.message and "hunter2" not in str(occ.stored_sample())


def _json_error_span(message: bytes) -> bytes:
    return (
        b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"'
        + TRACE.hex().encode()
        + b'","spanId":"'
        + SPAN.hex().encode()
        + b'","status":{"code":2,"message":"'
        + message
        + b'"}}]}]}]}'
    )


def test_nul_is_cleaned_from_json(extractor):
    request = otlp.decode("traces", _json_error_span(b"a\\u0000b\\u00e9c"), otlp.JSON)
    [occ] = extractor.traces(request).occurrences
    assert occ.message == "a\ufffdb\u00e9c"


def test_lone_surrogates_are_refused_by_both_decoders():
    # Why extract._clean has nothing to do about them: they never get past decoding.
    with pytest.raises(otlp.OtlpRejected) as info:
        otlp.decode("traces", _json_error_span(b"a\\ud800c"), otlp.JSON)
    assert info.value.http_status == 400
    bad_utf8 = traces([span(error="x")]).SerializeToString().replace(b"\x12\x01x", b"\x12\x01\xed")
    with pytest.raises(otlp.OtlpRejected) as info:
        otlp.decode("traces", bad_utf8, otlp.PROTOBUF)
    assert info.value.http_status == 400


# --------------------------------------------------------------------------- fuzz

_any_scalar = st.one_of(
    st.text(max_size=50).map(lambda s: AnyValue(string_value=s)),
    st.integers(-(2**63), 2**63 - 1).map(lambda i: AnyValue(int_value=i)),
    st.booleans().map(lambda b: AnyValue(bool_value=b)),
    st.binary(max_size=20).map(lambda b: AnyValue(bytes_value=b)),
)
_keys = st.sampled_from(
    [
        "exception.type",
        "exception.message",
        "exception.stacktrace",
        "ipai.failure.code",
        "error.type",
        "ipai.source",
        "ipai.occurrence_id",
        "ipai.failure.fingerprint",
        "event.name",
        "service.name",
        "x",
    ]
)
_attr_maps = st.dictionaries(_keys, _any_scalar, max_size=6)


@st.composite
def _span_requests(draw):
    spans = []
    for _ in range(draw(st.integers(0, 4))):
        s = span(
            error=draw(st.one_of(st.none(), st.text(max_size=80))),
            trace_id=draw(st.sampled_from([None, b"", b"\x00" * 16, b"\x01" * 5])),
            span_id=draw(st.sampled_from([None, b"", b"\x02" * 8])),
            end_ns=draw(st.integers(0, 2**64 - 1)),
        )
        for key, value in draw(_attr_maps).items():
            s.attributes.add(key=key, value=value)
        for _ in range(draw(st.integers(0, 2))):
            ev = s.events.add(name=draw(st.sampled_from(["exception", "other"])))
            for key, value in draw(_attr_maps).items():
                ev.attributes.add(key=key, value=value)
        spans.append(s)
    resource = {k: v.string_value for k, v in draw(_attr_maps).items() if v.WhichOneof("value") == "string_value"}
    return traces(spans, resource=resource)


def _check(extraction):
    for occ in extraction.occurrences:
        assert occ.source and occ.occurrence_id and occ.fingerprint.strip()
        assert occ.code
        assert envelope_errors(occ.stored_sample()) == []


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=_span_requests(), mutate=st.integers(0, 3), cut=st.integers(0, 10_000))
def test_fuzz_decode_extract_never_crashes(extractor, request, mutate, cut):
    body = request.SerializeToString()
    if mutate == 1:
        body = body[: cut % (len(body) + 1)]
    elif mutate == 2 and body:
        pos = cut % len(body)
        body = body[:pos] + bytes([body[pos] ^ 0xFF]) + body[pos + 1 :]
    try:
        decoded = otlp.decode("traces", body, otlp.PROTOBUF)
    except otlp.OtlpRejected as exc:
        assert exc.http_status == 400
        return
    _check(extractor.traces(decoded, raw=body))


@settings(max_examples=150, deadline=None)
@given(body=st.binary(max_size=400), signal=st.sampled_from(["traces", "logs", "metrics"]))
def test_fuzz_random_protobuf_bytes(extractor, body, signal):
    try:
        decoded = otlp.decode(signal, body, otlp.PROTOBUF)
    except otlp.OtlpRejected as exc:
        assert exc.http_status == 400
        return
    if signal == "traces":
        _check(extractor.traces(decoded, raw=body))
    elif signal == "logs":
        _check(extractor.logs(decoded))


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(
    span_fields=st.dictionaries(
        st.sampled_from(["traceId", "spanId", "name", "status", "events", "attributes", "endTimeUnixNano"]),
        _json_values,
        max_size=6,
    )
)
def test_fuzz_json_wrong_types(extractor, span_fields):
    import json

    body = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span_fields]}]}]}).encode()
    try:
        decoded = otlp.decode("traces", body, otlp.JSON)
    except otlp.OtlpRejected as exc:
        assert exc.http_status == 400
        return
    _check(extractor.traces(decoded))


def test_blank_producer_ids_fall_back_to_derived_ones(extractor):
    blank = {"ipai.failure.fingerprint": " ", "ipai.occurrence_id": "  ", "ipai.source": "\t"}
    (occ,) = extractor.traces(traces([span(error="boom", attributes=blank)])).occurrences
    assert occ.fingerprint.startswith("fp1:")
    assert occ.occurrence_id.startswith("span:")
    assert occ.source == "otlp"


def test_precheck_never_skips_a_body_with_an_error():
    from opentelemetry.proto.trace.v1.trace_pb2 import Status

    from ipai_ops.bridge.prefilter import trace_errors_possible

    plain = traces([span(trace_id=b"\x01" * 16, span_id=b"\x02" * 8)]).SerializeToString()
    assert not trace_errors_possible(plain)
    assert trace_errors_possible(traces([span(error="boom")]).SerializeToString())
    assert trace_errors_possible(traces([span(exceptions=[{"exception.type": "X"}])]).SerializeToString())
    # A non-minimal varint is still code 2 for every protobuf parser: the check must see it too.
    non_minimal = b"\x18\x82\x00"
    assert Status.FromString(non_minimal).code == Status.STATUS_CODE_ERROR
    body = b"\x0a\x09" + b"\x12\x07" + b"\x12\x05" + b"\x7a\x03" + non_minimal
    assert trace_errors_possible(body)
    # Ids and attributes full of the bytes of an ERROR status are no longer false alarms.
    decoy = span(
        trace_id=b"\x18\x02" * 8,
        span_id=b"\x7a\x02\x18\x02" * 2,
        attributes={"n": 2, "text": "\x12\x09exception"},
        name="exception",
    )
    assert not trace_errors_possible(traces([decoy]).SerializeToString())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.binary(min_size=16, max_size=16),
            st.binary(min_size=8, max_size=8),
            st.sampled_from([0, 1, 2]),
            st.lists(st.sampled_from(["exception", "log", "exceptions", "retry"]), max_size=3),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_precheck_is_exact_on_spans(specs):
    """The skeleton answer equals the span walk's, both ways: no miss and no false alarm."""
    from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

    from ipai_ops.bridge.prefilter import trace_errors_possible

    spans = []
    for trace_id, span_id, code, event_names in specs:
        item = Span(trace_id=trace_id, span_id=span_id, name="work")
        if code:
            item.status.CopyFrom(Status(code=code, message="failed" if code == 2 else ""))
        for name in event_names:
            item.events.add(name=name)
        spans.append(item)
    walk = any(s.status.code == Status.STATUS_CODE_ERROR or any(e.name == "exception" for e in s.events) for s in spans)
    assert trace_errors_possible(traces(spans).SerializeToString()) == walk


def test_an_instrumentation_echo_of_a_reported_exception_is_not_a_second_occurrence(extractor):
    reported = {
        "exception.type": "billing.Failure",
        "exception.message": "card declined [... 40 chars truncated]",
        "ipai.occurrence_id": "occ-1",
    }
    echo = {"exception.type": "billing.Failure", "exception.message": "card declined for order 17 by the issuer bank"}
    other = {"exception.type": "billing.Failure", "exception.message": "a different failure"}
    (occ,) = extractor.traces(traces([span(exceptions=[reported, echo])])).occurrences
    assert occ.occurrence_id == "occ-1"
    both = extractor.traces(traces([span(exceptions=[reported, echo, other])])).occurrences
    assert sorted(o.occurrence_id.split(":")[0] for o in both) == ["event", "occ-1"]
    # without a reported event nothing is deduplicated: two recordings stay two
    assert len(extractor.traces(traces([span(exceptions=[echo, dict(echo)])])).occurrences) == 2
