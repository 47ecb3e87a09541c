"""The bridge's own Prometheus metrics (names are a contract: docs/specs/telemetry_v1.md).

With several worker processes the supervisor sets ``PROMETHEUS_MULTIPROC_DIR`` before
the workers import this module, so prometheus-client keeps every value in per-process
files and ``/metrics`` (served by any worker) aggregates them all.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

RECORDS_RECEIVED = Counter(
    "ipai_bridge_records_received",
    "Spans, log records and metric data points decoded from accepted requests.",
    ["signal", "encoding"],
)
ERRORS_WRITTEN = Counter(
    "ipai_bridge_errors_written",
    "New occurrences committed to ops.agent_error_occurrences (redeliveries excluded).",
)
RECORDS_REJECTED = Counter(
    "ipai_bridge_records_rejected",
    "Records not written, by reason (whole refused requests count 1 when their records are unknown).",
    ["reason"],
)
BATCH_SIZE = Histogram(
    "ipai_bridge_batch_size",
    "Error records per committed write batch.",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
)
WRITE_SECONDS = Histogram(
    "ipai_bridge_write_seconds",
    "Wall time of one batch transaction, commit included.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
INFLIGHT = Gauge(
    "ipai_bridge_inflight_requests",
    "Requests being processed now.",
    multiprocess_mode="livesum",
)


def exposition() -> tuple[bytes, str]:
    """The text exposition of every worker's metrics, and its content type."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
