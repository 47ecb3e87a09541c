"""OTLP/gRPC on grpc.aio: TraceService/Export, LogsService/Export, MetricsService/Export.

The handlers receive the request as bytes (no deserializer is registered) and decode it
themselves, like OTLP/HTTP does: an undecodable message is answered ``INVALID_ARGUMENT``
(gRPC's own deserializer would end the call with ``UNKNOWN``), and the body goes through
the same limits and skeleton check as an OTLP/HTTP protobuf body.

Export is unary on the wire but registered here as a *stream-unary* method: grpc.aio runs
a unary handler only once the whole request message has arrived (buffered by gRPC core),
a stream handler as soon as the call's headers have. So the bridge admits a call before
its message is read (token, budget, calls per worker), refuses it with
``RESOURCE_EXHAUSTED`` + ``RetryInfo`` in the status details, reads at most
``max_inflight`` messages at a time and each within ``body_timeout_seconds``. gRPC's own
``maximum_concurrent_rpcs`` is not used: its refusals carry no ``RetryInfo``, which Go
senders take as permanent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc
from google.protobuf.any_pb2 import Any
from google.protobuf.duration_pb2 import Duration
from google.rpc import status_pb2
from google.rpc.error_details_pb2 import RetryInfo

from ipai_ops.bridge import metrics
from ipai_ops.bridge.auth import Sender
from ipai_ops.bridge.otlp import PROTOBUF, OtlpRejected
from ipai_ops.bridge.pipeline import Pipeline, at_capacity
from ipai_ops.bridge.settings import Settings

log = logging.getLogger(__name__)

_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)


class Admission:
    """gRPC calls per worker, counted from their headers on, shared by the three services.

    ``max_calls`` calls at a time (beyond: refused before their message is read); of those,
    ``max_reads`` receive their message at a time (gRPC core holds a message being received
    in memory, up to ``max_decompressed_bytes``): the others wait, which costs one HTTP/2
    flow-control window each (64 KiB: no BDP probing), and are refused when no read could
    start within ``body_timeout``; the message must have arrived ``body_timeout`` after
    the call started.
    """

    def __init__(self, *, max_calls: int, max_reads: int, body_timeout: float) -> None:
        self.max_calls = max_calls
        self.calls = 0
        self.body_timeout = body_timeout
        self._reads = asyncio.Semaphore(max_reads)

    def enter(self) -> None:
        if self.calls >= self.max_calls:
            raise at_capacity(f"bridge at capacity ({self.max_calls} gRPC calls in progress); retry later")
        self.calls += 1

    def leave(self) -> None:
        self.calls -= 1

    async def read(self, context: grpc.aio.ServicerContext, pipeline: Pipeline) -> bytes:
        """The call's one request message, arrived within ``body_timeout`` of the call's start."""
        loop = asyncio.get_running_loop()
        until = loop.time() + self.body_timeout
        try:
            await asyncio.wait_for(self._reads.acquire(), self.body_timeout)
        except TimeoutError:
            raise at_capacity(
                f"bridge at capacity (no request message could be read within {self.body_timeout:g} s); retry later"
            ) from None
        if pipeline.inflight >= pipeline.max_inflight:
            # Every slot is taken: a message read now would most likely be refused once it
            # has arrived (memory spent for nothing); refuse it before reading instead.
            self._reads.release()
            raise at_capacity(f"bridge at capacity ({pipeline.max_inflight} requests in flight); retry later")
        try:
            # One deadline from the call's start, waiting included: calls that never send
            # their message, queued for a read, all leave at their deadline instead of each
            # holding a read for a whole body_timeout in turn.
            message = await asyncio.wait_for(context.read(), max(until - loop.time(), 0.001))
        except TimeoutError:
            raise OtlpRejected(
                408,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                "body_timeout",
                f"request message not received within {self.body_timeout:g} s",
            ) from None
        finally:
            self._reads.release()
        if message is grpc.aio.EOF:
            raise OtlpRejected(400, grpc.StatusCode.INVALID_ARGUMENT, "malformed", "no request message")
        return message


class _Export:
    signal = ""

    def __init__(self, pipeline: Pipeline, settings: Settings, admission: Admission) -> None:
        self.pipeline = pipeline
        self.settings = settings
        self.admission = admission

    def _sender(self, context: grpc.aio.ServicerContext) -> Sender | None:
        presented = None
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                presented = value if isinstance(value, str) else value.decode("latin-1")
        return self.pipeline.authenticate(presented, self.settings.token)

    async def Export(self, _requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext):
        entered = False
        try:
            sender = self._sender(context)
            self.pipeline.check_quota_before_body(sender)
            self.admission.enter()
            entered = True
            body = await self.admission.read(context, self.pipeline)
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
        finally:
            if entered:
                self.admission.leave()


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
    # Stream-unary so that the handler runs before the message is read (module docstring).
    export = grpc.stream_unary_rpc_method_handler(
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
            # A call not yet reading its message is held to the initial HTTP/2 window (64 KiB):
            # without this, bandwidth-delay probing grows every stream's window to megabytes,
            # and gRPC core buffers that much of each waiting call's message.
            ("grpc.http2.bdp_probe", 0),
            # Several worker processes share the port.
            ("grpc.so_reuseport", 1),
            # Connections without a call for this long are closed (GOAWAY).
            ("grpc.max_connection_idle_ms", settings.idle_timeout_seconds * 1000),
            # Connections are recycled every 2 x idle_timeout with GOAWAY (calls in progress
            # get the body deadline to finish), so a connection cannot live for ever on
            # calls that are each refused in time.
            ("grpc.max_connection_age_ms", settings.idle_timeout_seconds * 2000),
            ("grpc.max_connection_age_grace_ms", settings.body_timeout_seconds * 1000),
        ],
        # No maximum_concurrent_rpcs: Admission bounds the calls and answers with RetryInfo.
    )
    admission = Admission(
        max_calls=settings.max_connections,
        max_reads=settings.max_inflight,
        body_timeout=settings.body_timeout_seconds,
    )
    server.add_generic_rpc_handlers(
        tuple(_handler(kind(pipeline, settings, admission)) for kind in (TraceService, LogsService, MetricsService))
    )
    server.add_insecure_port(f"{settings.host}:{settings.grpc_port}")
    return server
