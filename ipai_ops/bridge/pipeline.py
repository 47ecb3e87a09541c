"""One export request, whatever its transport: admission, extraction, write, answer.

Shared by the OTLP/HTTP and OTLP/gRPC servers so both answer identically.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
from google.protobuf.message import Message

from ipai_ops.bridge import metrics
from ipai_ops.bridge.extract import Extraction, Extractor
from ipai_ops.bridge.otlp import OtlpRejected, count_records, partial_success
from ipai_ops.bridge.writer import DatabaseUnavailable, Writer
from ipai_ops.taxonomy import Registry

log = logging.getLogger(__name__)


def at_capacity(message: str) -> OtlpRejected:
    return OtlpRejected(503, grpc.StatusCode.RESOURCE_EXHAUSTED, "at_capacity", message)


class BodyBudget:
    """Bytes of request bodies being received, bounded across all connections of a worker.

    A body is read before its request takes a slot (a slow sender must not hold one), so
    the bytes buffered meanwhile are bounded here instead: ``max_inflight x max_body_bytes``
    by default, the bound a slot gave before.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0

    @contextmanager
    def reservation(self) -> Iterator[_Reservation]:
        held = _Reservation(self)
        try:
            yield held
        finally:
            self.used -= held.taken


class _Reservation:
    __slots__ = ("budget", "taken")

    def __init__(self, budget: BodyBudget) -> None:
        self.budget = budget
        self.taken = 0

    def take(self, count: int) -> None:
        budget = self.budget
        if budget.used + count > budget.total:
            raise at_capacity(f"bridge at capacity ({budget.total} body bytes being received); retry later")
        budget.used += count
        self.taken += count


class Pipeline:
    def __init__(
        self,
        *,
        registry: Registry,
        writer: Writer,
        max_inflight: int,
        default_source: str,
        sample_refresh_seconds: float = 60.0,
        body_budget: int | None = None,
    ) -> None:
        self.extractor = Extractor(
            registry, default_source=default_source, thin=True, sample_refresh_seconds=sample_refresh_seconds
        )
        self.writer = writer
        self.max_inflight = max_inflight
        self.inflight = 0
        self.bodies = BodyBudget(body_budget if body_budget is not None else max_inflight * 4 * 1024 * 1024)

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Admission control, taken once the body has arrived: at capacity the request is
        refused, never queued.

        OTLP/HTTP "Failures": 503 with Retry-After (gRPC RESOURCE_EXHAUSTED with RetryInfo)
        is retryable, so the sender keeps the data; memory stays bounded by
        max_inflight x the decoding limits.
        """
        if self.inflight >= self.max_inflight:
            raise at_capacity(f"bridge at capacity ({self.max_inflight} requests in flight); retry later")
        self.inflight += 1
        metrics.INFLIGHT.inc()
        try:
            yield
        finally:
            self.inflight -= 1
            metrics.INFLIGHT.dec()

    def extract(self, signal: str, request: Message, *, raw: bytes | None) -> Extraction:
        if signal == "traces":
            return self.extractor.traces(request, raw=raw)
        if signal == "logs":
            return self.extractor.logs(request)
        return Extraction()  # metrics are acknowledged, never stored

    async def export(self, signal: str, request: Message, *, encoding: str, raw: bytes | None = None) -> Message:
        """Store the request's errors; return the OTLP response only after COMMIT."""
        metrics.RECORDS_RECEIVED.labels(signal, encoding).inc(count_records(signal, request))
        extraction = self.extract(signal, request, raw=raw)
        for reason, count in extraction.rejected.items():
            metrics.RECORDS_REJECTED.labels(reason).inc(count)
        occurrences = extraction.occurrences
        if occurrences:
            started = time.perf_counter()
            try:
                result = await self.writer.write(occurrences)
            except DatabaseUnavailable as exc:
                metrics.RECORDS_REJECTED.labels("db_unavailable").inc(len(occurrences))
                log.warning("ops database unavailable, asking the sender to retry: %s", exc)
                raise OtlpRejected(
                    503,
                    grpc.StatusCode.UNAVAILABLE,
                    "db_unavailable",
                    "ops database unavailable; retry later",
                ) from None
            metrics.WRITE_SECONDS.observe(time.perf_counter() - started)
            metrics.BATCH_SIZE.observe(len(occurrences))
            metrics.ERRORS_WRITTEN.inc(result.new_occurrences)
        return partial_success(signal, rejected=extraction.rejected_count, message=extraction.message())
