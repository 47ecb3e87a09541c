"""OTLP/gRPC on grpc.aio: TraceService/Export, LogsService/Export, MetricsService/Export."""

from __future__ import annotations

import logging

import grpc
from google.protobuf.duration_pb2 import Duration
from google.rpc.error_details_pb2 import RetryInfo
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from ipai_ops.bridge import metrics
from ipai_ops.bridge.otlp import OtlpRejected, check_bearer
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

    async def Export(self, request, context: grpc.aio.ServicerContext):
        try:
            self._check_token(context)
            with self.pipeline.slot():
                return await self.pipeline.export(self.signal, request, encoding="grpc")
        except OtlpRejected as exc:
            if exc.reason != "db_unavailable":
                metrics.RECORDS_REJECTED.labels(exc.reason).inc()
            trailing = ()
            if exc.grpc_code in _RETRYABLE:
                # OTLP/gRPC "Failures": RESOURCE_EXHAUSTED is retryable only with RetryInfo.
                info = RetryInfo(retry_delay=Duration(seconds=self.settings.retry_after_seconds))
                trailing = (("google.rpc.retryinfo-bin", info.SerializeToString()),)
            await context.abort(exc.grpc_code, exc.message, trailing_metadata=trailing)


class TraceService(_Export, trace_service_pb2_grpc.TraceServiceServicer):
    signal = "traces"


class LogsService(_Export, logs_service_pb2_grpc.LogsServiceServicer):
    signal = "logs"


class MetricsService(_Export, metrics_service_pb2_grpc.MetricsServiceServicer):
    signal = "metrics"


def build_server(pipeline: Pipeline, settings: Settings) -> grpc.aio.Server:
    server = grpc.aio.server(
        options=[
            # Applies to the decompressed message too (gRPC checks after inflating).
            ("grpc.max_receive_message_length", settings.max_decompressed_bytes),
            # Several worker processes share the port.
            ("grpc.so_reuseport", 1),
        ],
        maximum_concurrent_rpcs=settings.max_inflight * 2,
    )
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(pipeline, settings), server)
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(LogsService(pipeline, settings), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(MetricsService(pipeline, settings), server)
    server.add_insecure_port(f"{settings.host}:{settings.grpc_port}")
    return server
