"""Agents speak OpenTelemetry GenAI: the real SDK's ``gen_ai.*`` spans, exported over OTLP to a
running bridge, land in PostgreSQL with provider, model, operation and tokens per occurrence,
and the latest provider, model, environment and release on the error group.

Span shapes follow the GenAI semantic conventions (inference spans: name
``{gen_ai.operation.name} {gen_ai.request.model}``, kind CLIENT, ``error.type`` and status
ERROR when the call failed); attribute names come from the semconv package.
"""

from __future__ import annotations

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.semconv._incubating.attributes.gen_ai_attributes import (
    GEN_AI_OPERATION_NAME,
    GEN_AI_PROVIDER_NAME,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_RESPONSE_MODEL,
    GEN_AI_SYSTEM,
    GEN_AI_USAGE_INPUT_TOKENS,
    GEN_AI_USAGE_OUTPUT_TOKENS,
)
from opentelemetry.semconv.attributes.deployment_attributes import DEPLOYMENT_ENVIRONMENT_NAME
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.service_attributes import SERVICE_NAME, SERVICE_VERSION
from opentelemetry.trace import SpanKind, Status, StatusCode

from ipai_ops.bridge.extract import MAX_GEN_AI_MODEL_CHARS, MAX_TOKENS, gen_ai_context
from tests.bridge.conftest import BridgeProcess, unique_letters
from tests.conftest import query_rows


class RateLimitError(Exception):
    """What a provider SDK raises on HTTP 429 (the conventions' error.type is its class name)."""


def _agent(service: str, exporter) -> TracerProvider:
    resource = Resource.create(
        {SERVICE_NAME: service, SERVICE_VERSION: "2.3.1", DEPLOYMENT_ENVIRONMENT_NAME: "staging"}
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def _emit(provider: TracerProvider, tag: str) -> None:
    tracer = provider.get_tracer("genai-agent")
    # 1. A chat call the provider refused: status ERROR with error.type, request/response
    #    model and token usage (the conventions' current attribute names).
    with tracer.start_as_current_span(
        "chat gpt-4o-mini",
        kind=SpanKind.CLIENT,
        attributes={
            GEN_AI_OPERATION_NAME: "chat",
            GEN_AI_PROVIDER_NAME: "openai",
            GEN_AI_REQUEST_MODEL: "gpt-4o-mini",
            GEN_AI_RESPONSE_MODEL: "gpt-4o-mini-2024-07-18",
            GEN_AI_USAGE_INPUT_TOKENS: 412,
            GEN_AI_USAGE_OUTPUT_TOKENS: 0,
            ERROR_TYPE: "RateLimitError",
        },
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        span.set_status(Status(StatusCode.ERROR, f"Rate limit reached for gpt-4o-mini in organization {tag}"))
    # 2. An older instrumentation (gen_ai.system) whose call raised: the exception event is
    #    the occurrence, the GenAI context comes from its span.
    try:
        with tracer.start_as_current_span(
            "chat claude-3-5-sonnet",
            kind=SpanKind.CLIENT,
            attributes={
                GEN_AI_OPERATION_NAME: "chat",
                GEN_AI_SYSTEM: "anthropic",
                GEN_AI_REQUEST_MODEL: "claude-3-5-sonnet",
                GEN_AI_USAGE_INPUT_TOKENS: 1200,
                GEN_AI_USAGE_OUTPUT_TOKENS: 35,
            },
        ) as span:
            span.set_attribute(ERROR_TYPE, "RateLimitError")
            raise RateLimitError(f"anthropic overloaded for {tag}")
    except RateLimitError:
        pass
    # 3. A call whose attributes are not what the conventions say: tokens as text and
    #    negative, a model name far too long. Stored without them, capped.
    with tracer.start_as_current_span(
        "embeddings bad",
        kind=SpanKind.CLIENT,
        attributes={
            GEN_AI_OPERATION_NAME: "embeddings",
            GEN_AI_PROVIDER_NAME: "  aws.bedrock  ",
            GEN_AI_REQUEST_MODEL: "m" * 5000,
            GEN_AI_USAGE_INPUT_TOKENS: "12",
            GEN_AI_USAGE_OUTPUT_TOKENS: -5,
        },
    ) as span:
        span.set_status(Status(StatusCode.ERROR, f"embedding request invalid for {tag}"))
    # 4. A call that succeeded: not an error, nothing stored.
    with tracer.start_as_current_span(
        "chat gpt-4o",
        kind=SpanKind.CLIENT,
        attributes={GEN_AI_OPERATION_NAME: "chat", GEN_AI_PROVIDER_NAME: "openai", GEN_AI_USAGE_INPUT_TOKENS: 9},
    ):
        pass
    # 5. An error outside any GenAI call: no GenAI context, environment and release still kept.
    with tracer.start_as_current_span("db") as span:
        span.set_status(Status(StatusCode.ERROR, f"psycopg2.OperationalError: could not connect to server {tag}"))


def _occurrences(dsn: str, service: str) -> list[dict]:
    return query_rows(
        dsn,
        "SELECT o.occurrence_id, o.environment, o.service_version, o.gen_ai_provider, o.gen_ai_operation,"
        " o.gen_ai_request_model, o.gen_ai_response_model, o.gen_ai_input_tokens, o.gen_ai_output_tokens,"
        " e.last_environment, e.last_service_version, e.last_gen_ai_provider, e.last_gen_ai_model, e.message,"
        " e.error_type"
        " FROM ops.agent_error_occurrences o JOIN ops.agent_errors e ON e.id = o.error_id"
        " WHERE e.service = %(service)s ORDER BY o.occurred_at",
        {"service": service},
    )


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_sdk_genai_spans_land_with_provider_model_and_tokens(bridge: BridgeProcess, transport: str):
    service = f"genai{transport}{unique_letters()}"
    tag = unique_letters()
    if transport == "http":
        exporter = HttpSpanExporter(endpoint=bridge.url + "/v1/traces")
    else:
        exporter = GrpcSpanExporter(endpoint=f"127.0.0.1:{bridge.grpc_port}", insecure=True)
    provider = _agent(service, exporter)
    _emit(provider, tag)
    provider.shutdown()

    rows = _occurrences(bridge.dsn, service)
    assert len(rows) == 4  # the successful chat span is no error
    refused, raised, bad, plain = rows
    assert refused["occurrence_id"].startswith("span:")
    assert (refused["gen_ai_provider"], refused["gen_ai_operation"]) == ("openai", "chat")
    assert (refused["gen_ai_request_model"], refused["gen_ai_response_model"]) == (
        "gpt-4o-mini",
        "gpt-4o-mini-2024-07-18",
    )
    assert (refused["gen_ai_input_tokens"], refused["gen_ai_output_tokens"]) == (412, 0)
    assert refused["error_type"] == "RateLimitError" and tag in refused["message"]
    # the group keeps the latest provider, and the model that answered over the one asked for
    assert (refused["last_gen_ai_provider"], refused["last_gen_ai_model"]) == ("openai", "gpt-4o-mini-2024-07-18")

    assert raised["occurrence_id"].startswith("event:")  # the exception event, context from its span
    assert (raised["gen_ai_provider"], raised["gen_ai_request_model"]) == ("anthropic", "claude-3-5-sonnet")
    assert raised["gen_ai_response_model"] is None
    assert (raised["gen_ai_input_tokens"], raised["gen_ai_output_tokens"]) == (1200, 35)
    assert (raised["last_gen_ai_provider"], raised["last_gen_ai_model"]) == ("anthropic", "claude-3-5-sonnet")

    assert bad["gen_ai_provider"] == "aws.bedrock"
    assert bad["gen_ai_request_model"] == "m" * MAX_GEN_AI_MODEL_CHARS
    assert (bad["gen_ai_input_tokens"], bad["gen_ai_output_tokens"]) == (None, None)

    assert plain["gen_ai_provider"] is None and plain["last_gen_ai_provider"] is None
    for row in rows:
        assert (row["environment"], row["service_version"]) == ("staging", "2.3.1")
        assert (row["last_environment"], row["last_service_version"]) == ("staging", "2.3.1")


def _any(value) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    return AnyValue(string_value=value)


def _ctx(record: dict, span: dict | None = None):
    return gen_ai_context({k: _any(v) for k, v in record.items()}, {k: _any(v) for k, v in (span or {}).items()})


def test_context_is_none_outside_a_genai_call():
    assert _ctx({"http.request.method": "GET"}, {"db.system.name": "postgresql"}) is None
    # a model or tokens alone do not make a GenAI call (no provider, no operation)
    assert _ctx({GEN_AI_REQUEST_MODEL: "gpt-4o", GEN_AI_USAGE_INPUT_TOKENS: 3}) is None


def test_token_counts_are_validated_integers():
    def tokens(value):
        return _ctx({GEN_AI_PROVIDER_NAME: "openai", GEN_AI_USAGE_INPUT_TOKENS: value}).get("gen_ai_input_tokens")

    assert tokens(7) == 7
    assert tokens(7.0) == 7  # a JavaScript number sent as a double
    assert tokens(MAX_TOKENS) == MAX_TOKENS
    for bad in (7.5, -1, MAX_TOKENS + 1, True, "7", float("nan"), float("inf")):
        assert tokens(bad) is None, bad


def test_record_attributes_win_and_the_older_system_name_is_read():
    ctx = _ctx(
        {GEN_AI_SYSTEM: "vertex_ai", GEN_AI_RESPONSE_MODEL: "gemini-1.5-pro-002"},
        {GEN_AI_OPERATION_NAME: "chat", GEN_AI_REQUEST_MODEL: "gemini-1.5-pro", GEN_AI_PROVIDER_NAME: "gcp.vertex_ai"},
    )
    # the span's current name beats the record's older one: provider.name is read first
    assert ctx["gen_ai_provider"] == "gcp.vertex_ai"
    assert (ctx["gen_ai_request_model"], ctx["gen_ai_response_model"]) == ("gemini-1.5-pro", "gemini-1.5-pro-002")
    assert _ctx({GEN_AI_SYSTEM: "openai"})["gen_ai_provider"] == "openai"
    # non-string names are not names
    assert _ctx({GEN_AI_PROVIDER_NAME: 5, GEN_AI_OPERATION_NAME: "chat"}).get("gen_ai_provider") is None
