"""One export request, whatever its transport: admission, extraction, write, answer.

Shared by the OTLP/HTTP and OTLP/gRPC servers so both answer identically.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import grpc
from google.protobuf.message import Message

from ipai_ops.bridge import metrics
from ipai_ops.bridge.extract import Extraction, Extractor
from ipai_ops.bridge.otlp import (
    JSON,
    Deadline,
    OtlpRejected,
    count_records,
    decode_capped,
    gunzip,
    partial_success,
    too_large,
)
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


class _DeadlineExtractor(Extractor):
    """The extractor, checking the request's CPU deadline before each occurrence it builds."""

    deadline: Deadline | None = None

    def _occurrence(self, **kwargs):  # type: ignore[override]
        if self.deadline is not None:
            self.deadline.check()
        return super()._occurrence(**kwargs)


#: Bytes of OTLP/JSON per object or array a body may hold on average (max_json_bytes / this).
JSON_BYTES_PER_VALUE = 16


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
        max_records: int = 8192,
        max_decompressed_bytes: int = 16 * 1024 * 1024,
        max_json_bytes: int = 2 * 1024 * 1024,
        cpu_seconds: float = 5.0,
    ) -> None:
        self.max_records = max_records
        self.max_decompressed_bytes = max_decompressed_bytes
        self.max_json_bytes = max_json_bytes
        self.cpu_seconds = cpu_seconds
        # One thread per slot decodes and extracts (one hop off the event loop, ~100 us): a
        # cheap request is not queued behind an expensive one's decoding (they share the
        # GIL). The extractor's caches are not thread-safe: one request extracts at a time.
        self._decoders = ThreadPoolExecutor(max_workers=max_inflight, thread_name_prefix="ipai-bridge-decode")
        self._extract_lock = threading.Lock()
        self.extractor = _DeadlineExtractor(
            registry,
            default_source=default_source,
            thin=True,
            sample_refresh_seconds=sample_refresh_seconds,
            clamp_times=True,
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

    def close(self) -> None:
        self._decoders.shutdown(wait=True)

    def _decode(
        self, signal: str, body: bytes, kind: str, gzipped: bool, deadline: Deadline
    ) -> tuple[Message, bytes | None, int]:
        with deadline:
            limit = self.max_json_bytes if kind == JSON else self.max_decompressed_bytes
            if gzipped:
                body = gunzip(body, limit=limit)
            elif len(body) > limit:
                raise too_large(f"{kind} body exceeds the {limit} byte limit")
            return decode_capped(
                signal,
                body,
                kind,
                max_records=self.max_records,
                max_json_values=self.max_json_bytes // JSON_BYTES_PER_VALUE,
                deadline=deadline,
            )

    def _decode_and_extract(
        self, signal: str, body: bytes, kind: str, gzipped: bool, deadline: Deadline
    ) -> tuple[Message, int, Extraction]:
        request, raw, dropped = self._decode(signal, body, kind, gzipped, deadline)
        del body
        with self._extract_lock, deadline:
            deadline.check()
            self.extractor.deadline = deadline
            try:
                return request, dropped, self.extract(signal, request, raw=raw)
            finally:
                self.extractor.deadline = None

    async def export_body(self, signal: str, body: bytes, *, kind: str, gzipped: bool, encoding: str) -> Message:
        """Decode (gzip, record cap, protobuf or JSON) and extract off the event loop under one
        CPU deadline, then store; the OTLP response comes only after COMMIT.

        Records beyond ``max_records`` are refused through partial success
        (``too_many_records``); metrics requests are capped the same way and acknowledged.
        """
        loop = asyncio.get_running_loop()
        deadline = Deadline(self.cpu_seconds)
        request, dropped, extraction = await loop.run_in_executor(
            self._decoders, self._decode_and_extract, signal, body, kind, gzipped, deadline
        )
        if dropped and signal != "metrics":
            extraction.rejected["too_many_records"] += dropped
            extraction.notes.insert(0, f"{dropped} beyond the limit of {self.max_records} records per request")
        received = count_records(signal, request) + (dropped if signal != "metrics" else 0)
        return await self._store(signal, extraction, received=received, encoding=encoding)

    async def export(self, signal: str, request: Message, *, encoding: str, raw: bytes | None = None) -> Message:
        """Store the errors of a decoded request; return the OTLP response only after COMMIT."""
        extraction = self.extract(signal, request, raw=raw)
        return await self._store(signal, extraction, received=count_records(signal, request), encoding=encoding)

    async def _store(self, signal: str, extraction: Extraction, *, received: int, encoding: str) -> Message:
        metrics.RECORDS_RECEIVED.labels(signal, encoding).inc(received)
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
            if result.refused:
                # A record PostgreSQL refuses for its data (e.g. a release comparison that
                # overflows numeric) is rejected on its own; the rest of the batch is stored.
                metrics.RECORDS_REJECTED.labels("invalid_data").inc(len(result.refused))
                log.warning("%d record(s) refused by the database: %s", len(result.refused), result.refused[0][1])
                for occurrence, reason in result.refused:
                    extraction.reject(
                        "invalid_data",
                        f"record {occurrence['occurrence_id'][:100]} refused by the database: {reason}",
                    )
        return partial_success(signal, rejected=extraction.rejected_count, message=extraction.message())
