"""OTLP/gRPC on grpc.aio: TraceService/Export, LogsService/Export, MetricsService/Export.

The handlers receive the request as bytes (no deserializer is registered) and decode it
themselves, like OTLP/HTTP does: an undecodable message is answered ``INVALID_ARGUMENT``
(gRPC's own deserializer would end the call with ``UNKNOWN``), and the body goes through
the same limits and skeleton check as an OTLP/HTTP protobuf body.
"""

from __future__ import annotations

import logging

import grpc
from google.protobuf.any_pb2 import Any
from google.protobuf.duration_pb2 import Duration
from google.rpc import status_pb2
from google.rpc.error_details_pb2 import RetryInfo

from ipai_ops.bridge import metrics
from ipai_ops.bridge.auth import Sender
from ipai_ops.bridge.otlp import PROTOBUF, OtlpRejected
from ipai_ops.bridge.pipeline import Pipeline
from ipai_ops.bridge.settings import Settings

log = logging.getLogger(__name__)

_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)


class _Export:
    signal = ""

    def __init__(self, pipeline: Pipeline, settings: Settings) -> None:
        self.pipeline = pipeline
        self.settings = settings

    def _sender(self, context: grpc.aio.ServicerContext) -> Sender | None:
        presented = None
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                presented = value if isinstance(value, str) else value.decode("latin-1")
        return self.pipeline.authenticate(presented, self.settings.token)

    async def Export(self, body: bytes, context: grpc.aio.ServicerContext):
        try:
            sender = self._sender(context)
            self.pipeline.check_quota_before_body(sender)
            with self.pipeline.slot():
                return await self.pipeline.export_body(
                    self.signal, body, kind=PROTOBUF, gzipped=False, encoding="grpc", sender=sender
                )
        except OtlpRejected as exc:
            if exc.reason != "db_unavailable":
                metrics.RECORDS_REJECTED.labels(exc.reason).inc()
            trailing: tuple[tuple[str, bytes], ...] = ()
            if exc.grpc_code in _RETRYABLE and exc.http_status in (429, 503):
                # OTLP/gRPC "Failures": RESOURCE_EXHAUSTED is retryable only with RetryInfo,
                # which a request that is too expensive in itself (413 over HTTP) never gets.
                # RetryInfo goes in the google.rpc.Status details (grpc-status-details-bin, what
                # the Go exporter reads through status.FromError) and, as before, on its own.
                seconds = exc.retry_after if exc.retry_after is not None else self.settings.retry_after_seconds
                info = RetryInfo(retry_delay=Duration(seconds=seconds))
                detail = Any()
                detail.Pack(info)
                status = status_pb2.Status(code=exc.grpc_code.value[0], message=exc.message, details=[detail])
                trailing = (
                    ("google.rpc.retryinfo-bin", info.SerializeToString()),
                    ("grpc-status-details-bin", status.SerializeToString()),
                )
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
