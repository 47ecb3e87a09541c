"""OTLP/gRPC on grpc.aio: TraceService/Export, LogsService/Export, MetricsService/Export.

The handlers receive the request as bytes (no deserializer is registered) and decode it
themselves, like OTLP/HTTP does: an undecodable message is answered ``INVALID_ARGUMENT``
(gRPC's own deserializer would end the call with ``UNKNOWN``), and the body goes through
the same limits and skeleton check as an OTLP/HTTP protobuf body.
"""

from __future__ import annotations

import logging

import grpc
from google.protobuf.duration_pb2 import Duration
from google.rpc.error_details_pb2 import RetryInfo

from ipai_ops.bridge import metrics
from ipai_ops.bridge.otlp import PROTOBUF, OtlpRejected, check_bearer
from ipai_ops.bridge.pipeline import Pipeline
from ipai_ops.bridge.settings import Settings

log = logging.getLogger(__name__)

_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)


class _Export:
    signal = ""

    def __init__(self, pipeline: Pipeline, settings: Settings) -> None:
        self.pipeline = pipeline
        self.settings = settings

    def _check_token(self, context: grpc.aio.ServicerContext) -> None:
        if not self.settings.token:
            return
        presented = None
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                presented = value if isinstance(value, str) else value.decode("latin-1")
        check_bearer(presented, self.settings.token)

    async def Export(self, body: bytes, context: grpc.aio.ServicerContext):
        try:
            self._check_token(context)
            with self.pipeline.slot():
                return await self.pipeline.export_body(self.signal, body, kind=PROTOBUF, gzipped=False, encoding="grpc")
        except OtlpRejected as exc:
            if exc.reason != "db_unavailable":
                metrics.RECORDS_REJECTED.labels(exc.reason).inc()
            trailing = ()
            if exc.grpc_code in _RETRYABLE and exc.http_status in (429, 503):
                # OTLP/gRPC "Failures": RESOURCE_EXHAUSTED is retryable only with RetryInfo,
                # which a request that is too expensive in itself (413 over HTTP) never gets.
                info = RetryInfo(retry_delay=Duration(seconds=self.settings.retry_after_seconds))
                trailing = (("google.rpc.retryinfo-bin", info.SerializeToString()),)
            await context.abort(exc.grpc_code, exc.message, trailing_metadata=trailing)
        except Exception:
            # Not gRPC's UNKNOWN with the exception's text: INTERNAL, the detail in the log.
            log.exception("unexpected failure handling an OTLP/gRPC %s request", self.signal)
            metrics.RECORDS_REJECTED.labels("internal").inc()
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the bridge's log")


class TraceService(_Export):
    signal = "traces"


class LogsService(_Export):
    signal = "logs"


class MetricsService(_Export):
    signal = "metrics"


#: gRPC service name of each signal (opentelemetry/proto/collector/*/v1/*_service.proto).
SERVICES = {
    "traces": "opentelemetry.proto.collector.trace.v1.TraceService",
    "logs": "opentelemetry.proto.collector.logs.v1.LogsService",
    "metrics": "opentelemetry.proto.collector.metrics.v1.MetricsService",
}


def _handler(service: _Export) -> grpc.GenericRpcHandler:
    export = grpc.unary_unary_rpc_method_handler(
        service.Export,
        request_deserializer=None,  # bytes: decoded by the handler (INVALID_ARGUMENT when undecodable)
        response_serializer=lambda message: message.SerializeToString(),
    )
    return grpc.method_handlers_generic_handler(SERVICES[service.signal], {"Export": export})


def build_server(pipeline: Pipeline, settings: Settings) -> grpc.aio.Server:
    server = grpc.aio.server(
        options=[
            # Applies to the decompressed message too (gRPC checks after inflating).
            ("grpc.max_receive_message_length", settings.max_decompressed_bytes),
            # Several worker processes share the port.
            ("grpc.so_reuseport", 1),
            # Connections without a call for this long are closed (GOAWAY).
            ("grpc.max_connection_idle_ms", settings.idle_timeout_seconds * 1000),
            # A call counts from its headers on, before its message has arrived (the slot is
            # taken only then): connections are recycled every 2 x idle_timeout with GOAWAY and
            # calls in progress get the body deadline to finish, so a call that never sends
            # its message is ended instead of holding a place for ever.
            ("grpc.max_connection_age_ms", settings.idle_timeout_seconds * 2000),
            ("grpc.max_connection_age_grace_ms", settings.body_timeout_seconds * 1000),
        ],
        # Calls waiting for their message cost little; processing is bounded by the slots.
        maximum_concurrent_rpcs=settings.max_connections,
    )
    server.add_generic_rpc_handlers(
        tuple(_handler(kind(pipeline, settings)) for kind in (TraceService, LogsService, MetricsService))
    )
    server.add_insecure_port(f"{settings.host}:{settings.grpc_port}")
    return server
