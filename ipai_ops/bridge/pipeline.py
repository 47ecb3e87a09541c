"""One export request, whatever its transport: admission, extraction, write, answer.

Shared by the OTLP/HTTP and OTLP/gRPC servers so both answer identically.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace

import grpc
from google.protobuf.message import Message

from ipai_ops.bridge import metrics
from ipai_ops.bridge.auth import Sender, Senders, namespaced_fingerprint, namespaced_id
from ipai_ops.bridge.extract import MAX_ID_CHARS, Extraction, Extractor, SampleDraft
from ipai_ops.bridge.otlp import (
    JSON,
    Deadline,
    OtlpRejected,
    check_bearer,
    count_records,
    decode_capped,
    gunzip,
    partial_success,
    too_large,
)
from ipai_ops.bridge.quota import Quota, QuotaUnavailable
from ipai_ops.bridge.writer import DatabaseUnavailable, Samples, Writer
from ipai_ops.registry import Registry

log = logging.getLogger(__name__)


def at_capacity(message: str) -> OtlpRejected:
    return OtlpRejected(503, grpc.StatusCode.RESOURCE_EXHAUSTED, "at_capacity", message)


def over_quota(message: str, retry_after: int) -> OtlpRejected:
    """429 + Retry-After / RESOURCE_EXHAUSTED + RetryInfo: the sender keeps the data and retries."""
    return OtlpRejected(429, grpc.StatusCode.RESOURCE_EXHAUSTED, "quota_exceeded", message, retry_after=retry_after)


def apply_senders(extraction: Extraction, senders: Senders, sender: Sender) -> None:
    """Refuse the occurrences whose source ``sender`` may not write (``source_not_allowed``) and
    namespace ids and supplied fingerprints on shared sources (ipai_ops.bridge.auth); a sample
    is built from its occurrence as written, so it carries the namespaced ones."""
    kept = []
    decisions: dict[str, object] = {}
    for occ in extraction.occurrences:
        source = occ.source
        decision = decisions.get(source)
        if decision is None:
            decision = decisions[source] = senders.decide(sender, source)
        if not decision.allowed:  # type: ignore[attr-defined]
            extraction.reject("source_not_allowed", decision.reason)  # type: ignore[attr-defined]
            continue
        if decision.shared:  # type: ignore[attr-defined]
            draft = occ.sample
            supplied = isinstance(draft, SampleDraft) and draft.producer_fingerprint
            kept.append(
                replace(
                    occ,
                    occurrence_id=namespaced_id(sender, occ.occurrence_id, MAX_ID_CHARS),
                    fingerprint=namespaced_fingerprint(sender, occ.fingerprint) if supplied else occ.fingerprint,
                )
            )
            continue
        kept.append(occ)
    extraction.occurrences = kept


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
    """The extractor, checking the request's CPU deadline every DEADLINE_EVERY occurrences
    it builds (a check reads the thread's CPU clock: a system call, too dear per event) and
    before each template it makes."""

    deadline: Deadline | None = None
    _built = 0

    def _occurrence(self, **kwargs):  # type: ignore[override]
        self._built += 1
        if self.deadline is not None and not self._built % DEADLINE_EVERY:
            self.deadline.check()
        return super()._occurrence(**kwargs)

    def _make_template(self, *args, **kwargs):  # type: ignore[override]
        # Templates are made at the end of a request, each a classification: checked each.
        if self.deadline is not None:
            self.deadline.check()
        return super()._make_template(*args, **kwargs)


#: Occurrences built between two checks of the CPU deadline (one costs ~100 us at most).
DEADLINE_EVERY = 32


#: Bytes of OTLP/JSON per object or array a body may hold on average (max_json_bytes / this).
JSON_BYTES_PER_VALUE = 16
#: A protobuf body may build at most one message per this many bytes of
#: ``max_decompressed_bytes`` (1 Mi messages for 16 MiB; docs/bridge.md, "Decode").
PROTOBUF_BYTES_PER_MESSAGE = 16


class Pipeline:
    def __init__(
        self,
        *,
        registry: Registry,
        writer: Writer,
        max_inflight: int,
        default_source: str,
        sample_refresh_seconds: float | None = None,
        body_budget: int | None = None,
        max_records: int = 8192,
        max_decompressed_bytes: int = 16 * 1024 * 1024,
        max_json_bytes: int = 2 * 1024 * 1024,
        cpu_seconds: float = 5.0,
        senders: Senders | None = None,
        quota: Quota | None = None,
    ) -> None:
        #: Who may write as whom; None = every request may write every source (tests, tools).
        self.senders = senders
        self.quota = quota or Quota()
        self.max_records = max_records
        self.max_decompressed_bytes = max_decompressed_bytes
        self.max_json_bytes = max_json_bytes
        self.cpu_seconds = cpu_seconds
        # One thread per slot decodes and extracts (one hop off the event loop, ~100 us): a
        # cheap request is not queued behind an expensive one's decoding (they share the
        # GIL). The extractor's caches are not thread-safe: one request extracts at a time.
        self._decoders = ThreadPoolExecutor(max_workers=max_inflight, thread_name_prefix="ipai-bridge-decode")
        self._extract_lock = threading.Lock()
        self.extractor = _DeadlineExtractor(registry, default_source=default_source, clamp_times=True)
        if sample_refresh_seconds is not None:
            # Thinning samples is the writer's job (it sees what is written, after the
            # sender policy and the budgets); the setting still arrives here.
            writer.samples = Samples(sample_refresh_seconds)
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
                max_messages=self.max_decompressed_bytes // PROTOBUF_BYTES_PER_MESSAGE,
                deadline=deadline,
            )

    def _decode_and_extract(
        self, signal: str, body: bytes, kind: str, gzipped: bool, deadline: Deadline, *, sender: Sender | None
    ) -> tuple[Message, int, Extraction]:
        request, raw, dropped = self._decode(signal, body, kind, gzipped, deadline)
        del body
        with self._extract_lock, deadline:
            deadline.check()
            self.extractor.deadline = deadline
            try:
                extraction = self.extract(signal, request, raw=raw)
            finally:
                self.extractor.deadline = None
        if self.senders is not None and sender is not None:
            apply_senders(extraction, self.senders, sender)
        return request, dropped, extraction

    def authenticate(self, header: str | None, token: str = "") -> Sender | None:
        """The sender presenting ``header``: 401 unless a configured token matches. Without
        configured senders, only ``token`` is checked (no policy)."""
        if self.senders is None:
            check_bearer(header, token)
            return None
        return self.senders.authenticate(header)

    def check_quota_before_body(self, sender: Sender | None) -> None:
        """429 before the body is read when every source ``sender`` may write is over its budget
        (knowable only for a sender whose grant names its sources, without ``*``)."""
        if sender is None or not self.quota.enabled or sender.wildcard or not sender.sources:
            return
        wait = self.quota.exhausted(sender.name, sender.sources)
        if wait:
            raise over_quota(
                f"sender {sender.name!r} is over its quota of occurrences on every source it may write; "
                f"retry after {wait} s",
                wait,
            )

    def _charge(self, extraction: Extraction, sender: Sender | None) -> dict[tuple[str, str], int]:
        """Charge each occurrence to its (sender, source) budget; refuse those beyond it.

        Runs off the event loop (the budget may ask PostgreSQL for a slice). Raises 429 when
        occurrences were refused and none fit (the sender retries the request), 503 when
        the budget could not be asked.
        """
        charged: dict[tuple[str, str], int] = {}
        if not self.quota.enabled or not extraction.occurrences:
            return charged
        name = sender.name if sender is not None else ""
        wanted: dict[tuple[str, str], int] = {}
        for occ in extraction.occurrences:
            key = (name, occ.source)
            wanted[key] = wanted.get(key, 0) + 1
        granted: dict[tuple[str, str], int] = {}
        try:
            for key, count in wanted.items():
                granted[key] = self.quota.take(key, count)
        except QuotaUnavailable as exc:
            for key, count in granted.items():
                self.quota.give_back(key, count)
            metrics.RECORDS_REJECTED.labels("db_unavailable").inc(len(extraction.occurrences))
            log.warning("ops database unavailable for the budgets, asking the sender to retry: %s", exc)
            raise OtlpRejected(
                503, grpc.StatusCode.UNAVAILABLE, "db_unavailable", "ops database unavailable; retry later"
            ) from None
        if not any(granted.values()):
            for key, count in granted.items():
                self.quota.give_back(key, count)
            wait = min(self.quota.retry_after(key) for key in wanted)
            sources = ", ".join(sorted(repr(source) for _, source in wanted))[:200]
            raise over_quota(
                f"sender {name or '(any)'!r} is over its quota of occurrences for {sources}; retry after {wait} s",
                max(wait, 1),
            )
        kept = []
        waits: dict[tuple[str, str], int] = {}
        for occ in extraction.occurrences:
            key = (name, occ.source)
            if granted[key] > 0:
                granted[key] -= 1
                charged[key] = charged.get(key, 0) + 1
                kept.append(occ)
            else:
                if key not in waits:
                    waits[key] = self.quota.retry_after(key)
                extraction.reject(
                    "quota_exceeded",
                    f"over the quota of sender {name or '(any)'!r} for source {occ.source!r} "
                    f"(room again in {waits[key]} s)",
                )
        extraction.occurrences = kept
        return charged

    async def export_body(
        self, signal: str, body: bytes, *, kind: str, gzipped: bool, encoding: str, sender: Sender | None = None
    ) -> Message:
        """Decode (gzip, record cap, protobuf or JSON) and extract off the event loop under one
        CPU deadline, then store; the OTLP response comes only after COMMIT.

        Records beyond ``max_records`` are refused through partial success
        (``too_many_records``); metrics requests are capped the same way and acknowledged.
        """
        loop = asyncio.get_running_loop()
        deadline = Deadline(self.cpu_seconds)
        work = functools.partial(self._decode_and_extract, sender=sender)
        request, dropped, extraction = await loop.run_in_executor(
            self._decoders, work, signal, body, kind, gzipped, deadline
        )
        if dropped and signal != "metrics":
            extraction.rejected["too_many_records"] += dropped
            extraction.notes.insert(0, f"{dropped} beyond the limit of {self.max_records} records per request")
        received = count_records(signal, request) + (dropped if signal != "metrics" else 0)
        try:
            charged = (
                await loop.run_in_executor(self._decoders, self._charge, extraction, sender)
                if self.quota.enabled and extraction.occurrences
                else {}
            )
        except OtlpRejected:
            metrics.RECORDS_RECEIVED.labels(signal, encoding).inc(received)
            raise
        return await self._store(signal, extraction, received=received, encoding=encoding, charged=charged)

    async def export(self, signal: str, request: Message, *, encoding: str, raw: bytes | None = None) -> Message:
        """Store the errors of a decoded request; return the OTLP response only after COMMIT."""
        extraction = self.extract(signal, request, raw=raw)
        return await self._store(signal, extraction, received=count_records(signal, request), encoding=encoding)

    async def _store(
        self,
        signal: str,
        extraction: Extraction,
        *,
        received: int,
        encoding: str,
        charged: dict[tuple[str, str], int] | None = None,
    ) -> Message:
        metrics.RECORDS_RECEIVED.labels(signal, encoding).inc(received)
        for reason, count in extraction.rejected.items():
            metrics.RECORDS_REJECTED.labels(reason).inc(count)
        occurrences = extraction.occurrences
        if occurrences:
            started = time.perf_counter()
            try:
                result = await self.writer.write(occurrences)
            except DatabaseUnavailable as exc:
                for key, count in (charged or {}).items():
                    self.quota.give_back(key, count)  # nothing was stored: the retry pays
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
                    if charged:
                        name = next(iter(charged))[0]
                        self.quota.give_back((name, occurrence.source), 1)
                    extraction.reject(
                        "invalid_data",
                        f"record {occurrence.occurrence_id[:100]} refused by the database: {reason}",
                    )
        return partial_success(signal, rejected=extraction.rejected_count, message=extraction.message())
