"""The OpenTelemetry SDK objects: process-wide providers and swappable export pipelines.

OpenTelemetry lets a process set its global providers once. Odoo code that
instruments itself (``opentelemetry.trace.get_tracer(__name__)`` at import time,
as ipai_pulser_connector does) keeps what it got first, so the providers are built
once, on the first enabled setup, and registered globally. What a setup changes
afterwards (exporters, endpoints, sampler, batching) lives in a :class:`Pipeline`
that the providers reach through small switch objects; :func:`build_pipeline`
makes one from :class:`~._settings.Settings` and :meth:`Pipeline.shutdown` flushes
it. Between a shutdown and the next setup the switch sampler drops every span, so
instrumented code records nothing.

Only imported when telemetry is enabled: importing the SDK is the cost that an
unconfigured Odoo never pays.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import metrics as metrics_api
from opentelemetry import trace as trace_api
from opentelemetry._logs import set_logger_provider
from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, ConsoleLogRecordExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    MetricExportResult,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import (
    TELEMETRY_SDK_LANGUAGE,
    TELEMETRY_SDK_NAME,
    TELEMETRY_SDK_VERSION,
    Resource,
    ServiceInstanceIdResourceDetector,
)
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.sdk.trace.sampling import (
    _KNOWN_SAMPLERS,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.sdk.version import __version__ as sdk_version
from opentelemetry.semconv.attributes.service_attributes import SERVICE_NAME

from . import _settings as s
from ._redaction import clean_log_record, clean_span

_logger = logging.getLogger(__name__)

_CONSOLE = {
    "traces": ConsoleSpanExporter,
    "metrics": ConsoleMetricExporter,
    "logs": ConsoleLogRecordExporter,
}


# --------------------------------------------------------------------------------------
# Exporters
# --------------------------------------------------------------------------------------


def _otlp_class(signal: str, protocol: str) -> type:
    if protocol == "grpc":
        if signal == "traces":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            return OTLPSpanExporter
        if signal == "metrics":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

            return OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

        return OTLPLogExporter
    if signal == "traces":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter
    if signal == "metrics":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    return OTLPLogExporter


def _compression(protocol: str, name: str | None) -> Any:
    if not name:
        return None
    if protocol == "grpc":
        import grpc

        return {
            "gzip": grpc.Compression.Gzip,
            "deflate": grpc.Compression.Deflate,
            "none": grpc.Compression.NoCompression,
        }.get(name)
    from opentelemetry.exporter.otlp.proto.http import Compression

    return {"gzip": Compression.Gzip, "deflate": Compression.Deflate, "none": Compression.NoCompression}.get(name)


def make_exporter(signal: str, spec: s.Exporter) -> Any:
    """An exporter instance for ``spec``; OTLP options come from the settings, not ``os.environ``."""
    if spec.name == "otlp":
        kwargs: dict[str, Any] = {
            "endpoint": spec.endpoint,
            "headers": dict(spec.headers),
            "timeout": spec.timeout,
            "compression": _compression(spec.protocol or s.DEFAULT_PROTOCOL, spec.compression),
        }
        if spec.protocol == "grpc":
            kwargs["insecure"] = spec.insecure
        return _otlp_class(signal, spec.protocol or s.DEFAULT_PROTOCOL)(**kwargs)
    if spec.name == "console":
        return _CONSOLE[signal]()
    # Any other name: an installed exporter entry point, as opentelemetry-sdk's configurator does.
    from opentelemetry.util._importlib_metadata import entry_points

    found = list(entry_points(group=f"opentelemetry_{signal}_exporter", name=spec.name))
    if not found:
        raise ValueError(f"no OpenTelemetry {signal} exporter named {spec.name!r} is installed")
    return found[0].load()()


def _all_ok(results) -> bool:
    """Like all(), but runs every flush instead of stopping at the first failure."""
    ok = True
    for result in results:
        ok = bool(result) and ok
    return ok


# --------------------------------------------------------------------------------------
# Switches: the fixed providers reach the current pipeline through these
# --------------------------------------------------------------------------------------


class SwitchSampler(Sampler):
    """Delegates to the pipeline's sampler; drops everything while no pipeline is active."""

    def __init__(self) -> None:
        self.delegate: Sampler | None = None

    def should_sample(  # noqa: PLR0917 (the Sampler interface)
        self, parent_context, trace_id, name, kind=None, attributes=None, links=None, trace_state=None
    ):
        delegate = self.delegate
        if delegate is None:
            return SamplingResult(Decision.DROP)
        return delegate.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"IpaiSwitch{{{self.delegate.get_description() if self.delegate else 'off'}}}"


class SwitchSpanProcessor(SpanProcessor):
    """Forwards to the pipeline's processors; what they get is cleaned of secrets first
    (``_redaction``: URL tokens, exception text). A span that cannot be cleaned is dropped."""

    def __init__(self) -> None:
        self.delegates: tuple[SpanProcessor, ...] = ()

    def on_start(self, span, parent_context=None) -> None:
        for proc in self.delegates:
            proc.on_start(span, parent_context=parent_context)

    def on_end(self, span) -> None:
        delegates = self.delegates
        if not delegates:
            return
        try:
            span = clean_span(span)
        except Exception:  # never export what could not be cleaned
            _logger.debug("OpenTelemetry: a span could not be cleaned and is not exported", exc_info=True)
            return
        for proc in delegates:
            proc.on_end(span)

    def shutdown(self) -> None:
        for proc in self.delegates:
            proc.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return _all_ok(proc.force_flush(timeout_millis) for proc in self.delegates)


class SwitchLogRecordProcessor(LogRecordProcessor):
    def __init__(self) -> None:
        self.delegates: tuple[LogRecordProcessor, ...] = ()

    def on_emit(self, log_record) -> None:
        delegates = self.delegates
        if not delegates:
            return
        try:
            clean_log_record(log_record)
        except Exception:  # never export what could not be cleaned
            _logger.debug("OpenTelemetry: a log record could not be cleaned and is not exported", exc_info=True)
            return
        for proc in delegates:
            proc.on_emit(log_record)

    def enabled(self, **kwargs) -> bool:
        return bool(self.delegates)

    def shutdown(self) -> None:
        for proc in self.delegates:
            proc.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return _all_ok(proc.force_flush(timeout_millis) for proc in self.delegates)


class SwitchMetricExporter(MetricExporter):
    """The one exporter of the process's metric reader; forwards to the pipeline's exporters."""

    def __init__(self, template: MetricExporter | None) -> None:
        super().__init__(
            preferred_temporality=getattr(template, "_preferred_temporality", None),
            preferred_aggregation=getattr(template, "_preferred_aggregation", None),
        )
        self.delegates: tuple[MetricExporter, ...] = ()

    def export(self, metrics_data, timeout_millis: float = 10_000, **kwargs) -> MetricExportResult:
        result = MetricExportResult.SUCCESS
        for exporter in self.delegates:
            if exporter.export(metrics_data, timeout_millis=timeout_millis) is not MetricExportResult.SUCCESS:
                result = MetricExportResult.FAILURE
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return _all_ok(e.force_flush(timeout_millis) for e in self.delegates)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        for exporter in self.delegates:
            exporter.shutdown(timeout_millis=timeout_millis)


# --------------------------------------------------------------------------------------
# Providers (once per process) and pipelines (once per setup)
# --------------------------------------------------------------------------------------


def build_resource(settings: s.Settings, defaults: Mapping[str, Any]) -> Resource:
    """Our defaults, then ``OTEL_RESOURCE_ATTRIBUTES``, then ``OTEL_SERVICE_NAME``: the operator wins.

    ``service.instance.id`` is a UUID of this process (the SDK's detector: one per pid). The
    providers are usually built in Odoo's prefork master, before the workers fork; the SDK's
    providers then merge a fresh one into the resource in each child (``os.register_at_fork``),
    so every worker reports its own instance, as the semantic conventions require.
    """
    attrs: dict[str, Any] = {
        TELEMETRY_SDK_LANGUAGE: "python",
        TELEMETRY_SDK_NAME: "opentelemetry",
        TELEMETRY_SDK_VERSION: sdk_version,
        SERVICE_NAME: s.DEFAULT_SERVICE_NAME,
        **ServiceInstanceIdResourceDetector().detect().attributes,
    }
    attrs.update({k: v for k, v in defaults.items() if v not in (None, "")})
    attrs.update(settings.resource_attributes)
    if settings.raw.get(s.OTEL_SERVICE_NAME):
        attrs[SERVICE_NAME] = settings.service_name
    return Resource(attrs)


def make_sampler(settings: s.Settings) -> Sampler:
    name = settings.sampler
    if not name:
        return ParentBased(ALWAYS_ON)
    if name in ("traceidratio", "parentbased_traceidratio"):
        try:
            rate = float(settings.sampler_arg or 1.0)
        except ValueError:
            _logger.warning("OTEL_TRACES_SAMPLER_ARG=%r is not a number; using 1.0", settings.sampler_arg)
            rate = 1.0
        ratio = TraceIdRatioBased(rate)
        return ParentBased(ratio) if name.startswith("parentbased") else ratio
    if name in _KNOWN_SAMPLERS:
        return _KNOWN_SAMPLERS[name]
    _logger.warning("unknown OTEL_TRACES_SAMPLER %r; using parentbased_always_on", name)
    return ParentBased(ALWAYS_ON)


@dataclass
class Providers:
    """Built once per process, registered as the global providers."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    logger_provider: LoggerProvider
    sampler: SwitchSampler
    span_processor: SwitchSpanProcessor
    log_processor: SwitchLogRecordProcessor
    metric_exporter: SwitchMetricExporter
    #: Whether we could register them as the globals (someone else may have first).
    global_traces: bool = False
    global_metrics: bool = False
    global_logs: bool = False

    def update_resource(self, resource: Resource) -> None:
        for provider in (self.tracer_provider, self.meter_provider, self.logger_provider):
            update = getattr(provider, "_update_resource", None)
            if update is not None:
                update(resource)

    def shutdown(self) -> None:
        for provider in (self.tracer_provider, self.meter_provider, self.logger_provider):
            try:
                provider.shutdown()
            except Exception:  # telemetry must never break the shutdown of Odoo
                _logger.debug("OpenTelemetry provider shutdown failed", exc_info=True)


def build_providers(
    settings: s.Settings, resource: Resource, first_metric_exporter: MetricExporter | None
) -> Providers:
    sampler = SwitchSampler()
    span_processor = SwitchSpanProcessor()
    log_processor = SwitchLogRecordProcessor()
    metric_exporter = SwitchMetricExporter(first_metric_exporter)
    # shutdown_on_exit=False: this module flushes on Odoo's stop and at exit, in order.
    tracer_provider = TracerProvider(resource=resource, sampler=sampler, shutdown_on_exit=False)
    tracer_provider.add_span_processor(span_processor)
    reader = PeriodicExportingMetricReader(
        metric_exporter,
        export_interval_millis=settings.int_var("OTEL_METRIC_EXPORT_INTERVAL"),
        export_timeout_millis=settings.int_var("OTEL_METRIC_EXPORT_TIMEOUT"),
    )
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader], shutdown_on_exit=False)
    logger_provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
    logger_provider.add_log_record_processor(log_processor)
    providers = Providers(
        tracer_provider, meter_provider, logger_provider, sampler, span_processor, log_processor, metric_exporter
    )
    # The API keeps the first provider set and warns on later attempts: only set ours
    # where nobody (another distro, a test harness) set one before.
    if isinstance(trace_api.get_tracer_provider(), trace_api.ProxyTracerProvider):
        trace_api.set_tracer_provider(tracer_provider)
        providers.global_traces = True
    if isinstance(metrics_api.get_meter_provider(), metrics_api._internal._ProxyMeterProvider):
        metrics_api.set_meter_provider(meter_provider)
        providers.global_metrics = True
    from opentelemetry._logs import get_logger_provider
    from opentelemetry._logs._internal import ProxyLoggerProvider

    if isinstance(get_logger_provider(), ProxyLoggerProvider):
        set_logger_provider(logger_provider)
        providers.global_logs = True
    return providers


@dataclass
class Pipeline:
    """The exporters and batch processors of one setup."""

    settings: s.Settings
    sampler: Sampler
    span_processors: tuple[SpanProcessor, ...] = ()
    log_processors: tuple[LogRecordProcessor, ...] = ()
    metric_exporters: tuple[MetricExporter, ...] = ()
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _closed: bool = False

    def attach(self, providers: Providers) -> None:
        providers.span_processor.delegates = self.span_processors
        providers.log_processor.delegates = self.log_processors
        providers.metric_exporter.delegates = self.metric_exporters
        providers.sampler.delegate = self.sampler

    def shutdown(self, providers: Providers, *, timeout_millis: int = 10_000) -> None:
        """Flush everything this pipeline holds, then close its exporters. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        # Stop new spans first, then flush what is queued: a span ended after this
        # point would otherwise land in a processor that is shutting down.
        providers.sampler.delegate = None
        try:
            if self.metric_exporters:
                providers.meter_provider.force_flush(timeout_millis)
        except Exception:
            _logger.debug("OpenTelemetry metric flush failed", exc_info=True)
        providers.span_processor.delegates = ()
        providers.log_processor.delegates = ()
        providers.metric_exporter.delegates = ()
        for proc in (*self.span_processors, *self.log_processors):
            try:
                # BatchSpanProcessor/BatchLogRecordProcessor.shutdown export what is queued first.
                proc.shutdown()
            except Exception:
                _logger.debug("OpenTelemetry processor shutdown failed", exc_info=True)
        for exporter in self.metric_exporters:
            try:
                exporter.shutdown()
            except Exception:
                _logger.debug("OpenTelemetry metric exporter shutdown failed", exc_info=True)


def _exporters(settings: s.Settings, signal: str) -> list[Any]:
    out = []
    for spec in settings.exporters.get(signal, ()):
        try:
            out.append(make_exporter(signal, spec))
        except Exception as exc:
            _logger.warning("OpenTelemetry %s exporter %r not configured: %s", signal, spec.name, exc)
    return out


def build_pipeline(settings: s.Settings) -> Pipeline:
    span_processors: Sequence[SpanProcessor] = [
        BatchSpanProcessor(
            exporter,
            max_queue_size=settings.int_var("OTEL_BSP_MAX_QUEUE_SIZE"),
            schedule_delay_millis=settings.int_var("OTEL_BSP_SCHEDULE_DELAY"),
            max_export_batch_size=settings.int_var("OTEL_BSP_MAX_EXPORT_BATCH_SIZE"),
            export_timeout_millis=settings.int_var("OTEL_BSP_EXPORT_TIMEOUT"),
        )
        for exporter in _exporters(settings, "traces")
    ]
    log_processors: Sequence[LogRecordProcessor] = [
        BatchLogRecordProcessor(
            exporter,
            max_queue_size=settings.int_var("OTEL_BLRP_MAX_QUEUE_SIZE"),
            schedule_delay_millis=settings.int_var("OTEL_BLRP_SCHEDULE_DELAY"),
            max_export_batch_size=settings.int_var("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE"),
            export_timeout_millis=settings.int_var("OTEL_BLRP_EXPORT_TIMEOUT"),
        )
        for exporter in _exporters(settings, "logs")
    ]
    return Pipeline(
        settings=settings,
        sampler=make_sampler(settings),
        span_processors=tuple(span_processors),
        log_processors=tuple(log_processors),
        metric_exporters=tuple(_exporters(settings, "metrics")),
    )


class AuditLevelFilter(logging.Filter):
    """On the OpenTelemetry log handler, whose own level is the lower of the two: records of
    the audit logger pass from INFO, every other record from the configured level
    (``OTEL_PYTHON_LOG_HANDLER_LEVEL``, WARNING by default)."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == s.AUDIT_LOGGER or record.name.startswith(s.AUDIT_LOGGER + "."):
            return record.levelno >= s.AUDIT_LOG_LEVEL
        return record.levelno >= self.level


def audit_handler_level(level: int) -> int:
    """The handler's own level: low enough for audit events, :class:`AuditLevelFilter` does the rest."""
    return min(level, s.AUDIT_LOG_LEVEL)
