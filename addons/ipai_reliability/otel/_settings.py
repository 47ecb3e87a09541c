"""What the standard ``OTEL_*`` variables ask for, read once into a frozen value.

Pure Python on purpose: this module is imported at every Odoo start (the addon's
``post_load``) and must cost nothing when OpenTelemetry is not configured, so it
never imports the SDK. Names follow the OpenTelemetry SDK environment-variable
specification (``opentelemetry.sdk.environment_variables``); this addon adds none
of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote

_logger = logging.getLogger(__name__)

OTEL_SDK_DISABLED = "OTEL_SDK_DISABLED"
OTEL_SERVICE_NAME = "OTEL_SERVICE_NAME"
OTEL_RESOURCE_ATTRIBUTES = "OTEL_RESOURCE_ATTRIBUTES"
OTEL_TRACES_SAMPLER = "OTEL_TRACES_SAMPLER"
OTEL_TRACES_SAMPLER_ARG = "OTEL_TRACES_SAMPLER_ARG"
OTEL_EXPORTER_OTLP_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
OTEL_EXPORTER_OTLP_PROTOCOL = "OTEL_EXPORTER_OTLP_PROTOCOL"
OTEL_EXPORTER_OTLP_HEADERS = "OTEL_EXPORTER_OTLP_HEADERS"
OTEL_EXPORTER_OTLP_TIMEOUT = "OTEL_EXPORTER_OTLP_TIMEOUT"
OTEL_EXPORTER_OTLP_COMPRESSION = "OTEL_EXPORTER_OTLP_COMPRESSION"
OTEL_EXPORTER_OTLP_INSECURE = "OTEL_EXPORTER_OTLP_INSECURE"
#: Level of the records the ``odoo`` logger hands to OpenTelemetry
#: (opentelemetry-instrumentation-logging's variable; this addon defaults it to ``warning``).
OTEL_PYTHON_LOG_HANDLER_LEVEL = "OTEL_PYTHON_LOG_HANDLER_LEVEL"
#: HTTP semantic-convention stability opt-in read by opentelemetry-instrumentation-wsgi.
OTEL_SEMCONV_STABILITY_OPT_IN = "OTEL_SEMCONV_STABILITY_OPT_IN"

SIGNALS = ("traces", "metrics", "logs")
#: ``OTEL_TRACES_EXPORTER`` etc.
EXPORTER_VAR = {s: f"OTEL_{s.upper()}_EXPORTER" for s in SIGNALS}
#: Per-signal variants of the OTLP exporter variables, e.g. ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``.
OTLP_SUFFIXES = ("ENDPOINT", "PROTOCOL", "HEADERS", "TIMEOUT", "COMPRESSION", "INSECURE")

#: The OpenTelemetry specification's default; the Python SDK alone defaults ``otlp`` to gRPC.
DEFAULT_PROTOCOL = "http/protobuf"
PROTOCOLS = ("http/protobuf", "grpc")
DEFAULT_HTTP_ENDPOINT = "http://localhost:4318"
DEFAULT_GRPC_ENDPOINT = "http://localhost:4317"
DEFAULT_SERVICE_NAME = "odoo"
DEFAULT_LOG_LEVEL = logging.WARNING
#: Audit events (``run.state`` / ``run.cancel``, docs/specs/telemetry_v1.md) are INFO records
#: of their own logger, outside ``odoo``: exported at INFO whatever the handler level above.
AUDIT_LOGGER = "ipai.audit"
AUDIT_LOG_LEVEL = logging.INFO
_TRUE = frozenset({"true", "1", "yes", "on"})
_LEVELS = {
    "notset": logging.NOTSET,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


def _otlp_var(suffix: str, signal: str | None = None) -> str:
    return f"OTEL_EXPORTER_OTLP_{signal.upper()}_{suffix}" if signal else f"OTEL_EXPORTER_OTLP_{suffix}"


@dataclass(frozen=True)
class Exporter:
    """One exporter of one signal: ``otlp`` (with its resolved options) or a named entry point."""

    name: str
    protocol: str | None = None
    endpoint: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float | None = None
    compression: str | None = None
    insecure: bool | None = None


@dataclass(frozen=True)
class Settings:
    enabled: bool
    #: Why telemetry is off (``enabled`` False), for the one log line at start.
    reason: str = ""
    exporters: Mapping[str, tuple[Exporter, ...]] = field(default_factory=dict)
    service_name: str = DEFAULT_SERVICE_NAME
    resource_attributes: Mapping[str, str] = field(default_factory=dict)
    sampler: str | None = None
    sampler_arg: str | None = None
    log_level: int = DEFAULT_LOG_LEVEL
    #: The whole ``OTEL_*`` subset, for the SDK components that read their own variables
    #: (batch sizes, export intervals, limits).
    raw: Mapping[str, str] = field(default_factory=dict)

    def signal_enabled(self, signal: str) -> bool:
        return bool(self.exporters.get(signal))

    def int_var(self, name: str) -> int | None:
        value = self.raw.get(name)
        if value in (None, ""):
            return None
        try:
            return int(value)
        except ValueError:
            _logger.warning("ignoring %s=%r: not an integer", name, value)
            return None


def parse_key_values(text: str | None) -> dict[str, str]:
    """``k1=v1,k2=v2`` with percent-encoded values (W3C Baggage style), as the spec reads
    ``OTEL_RESOURCE_ATTRIBUTES`` and ``OTEL_EXPORTER_OTLP_HEADERS``; malformed items are skipped."""
    out: dict[str, str] = {}
    for item in (text or "").split(","):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            if item.strip():
                _logger.warning("ignoring malformed OTEL key=value item %r", item.strip())
            continue
        out[unquote(key)] = unquote(value.strip())
    return out


def _is_true(value: str | None) -> bool:
    return (value or "").strip().lower() in _TRUE


def _float(name: str, value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        _logger.warning("ignoring %s=%r: not a number", name, value)
        return None


def _otlp_exporter(env: Mapping[str, str], signal: str, name: str) -> Exporter:
    def get(suffix: str) -> str | None:
        return env.get(_otlp_var(suffix, signal)) or env.get(_otlp_var(suffix)) or None

    protocol = (get("PROTOCOL") or DEFAULT_PROTOCOL).strip()
    if name == "otlp_proto_grpc":
        protocol = "grpc"
    elif name == "otlp_proto_http":
        protocol = "http/protobuf"
    if protocol not in PROTOCOLS:
        _logger.warning("unsupported OTLP protocol %r for %s; using %s", protocol, signal, DEFAULT_PROTOCOL)
        protocol = DEFAULT_PROTOCOL
    specific = env.get(_otlp_var("ENDPOINT", signal))
    base = env.get(OTEL_EXPORTER_OTLP_ENDPOINT)
    if protocol == "grpc":
        endpoint = specific or base or DEFAULT_GRPC_ENDPOINT
    elif specific:
        # The spec: a signal-specific endpoint is used as is, the base one gets /v1/<signal>.
        endpoint = specific
    else:
        endpoint = (base or DEFAULT_HTTP_ENDPOINT).rstrip("/") + f"/v1/{signal}"
    insecure = get("INSECURE")
    return Exporter(
        name="otlp",
        protocol=protocol,
        endpoint=endpoint,
        headers=tuple(parse_key_values(get("HEADERS")).items()),
        # Seconds, as opentelemetry-python's exporters read this variable.
        timeout=_float("OTEL_EXPORTER_OTLP_TIMEOUT", get("TIMEOUT")),
        compression=(get("COMPRESSION") or "").strip().lower() or None,
        insecure=_is_true(insecure) if insecure is not None else None,
    )


def read_settings(environ: Mapping[str, str]) -> Settings:
    """The settings the ``OTEL_*`` variables of ``environ`` describe.

    Telemetry is on only when something asks for it: an OTLP endpoint
    (``OTEL_EXPORTER_OTLP_ENDPOINT`` or a per-signal one) or an explicit
    ``OTEL_{TRACES,METRICS,LOGS}_EXPORTER``. ``OTEL_SDK_DISABLED=true`` wins over all.
    A signal whose exporter is left to the default ``otlp`` is exported only when an
    endpoint covers it, so pointing traces somewhere does not make metrics and logs
    retry against an absent localhost collector forever.
    """
    raw = {k: v for k, v in environ.items() if k.startswith("OTEL_")}
    if _is_true(raw.get(OTEL_SDK_DISABLED)):
        return Settings(enabled=False, reason=f"{OTEL_SDK_DISABLED}=true", raw=raw)
    base_endpoint = raw.get(OTEL_EXPORTER_OTLP_ENDPOINT)
    asked = bool(base_endpoint) or any(raw.get(_otlp_var("ENDPOINT", s)) or raw.get(EXPORTER_VAR[s]) for s in SIGNALS)
    if not asked:
        return Settings(enabled=False, reason="no OTEL_EXPORTER_OTLP_*ENDPOINT nor OTEL_*_EXPORTER set", raw=raw)

    exporters: dict[str, tuple[Exporter, ...]] = {}
    for signal in SIGNALS:
        explicit = (raw.get(EXPORTER_VAR[signal]) or "").strip()
        if not explicit and not (base_endpoint or raw.get(_otlp_var("ENDPOINT", signal))):
            exporters[signal] = ()
            continue
        chosen = []
        for name in (n.strip() for n in (explicit or "otlp").split(",")):
            if not name or name == "none":
                continue
            if name in ("otlp", "otlp_proto_http", "otlp_proto_grpc"):
                chosen.append(_otlp_exporter(raw, signal, name))
            else:
                chosen.append(Exporter(name=name))
        exporters[signal] = tuple(chosen)
    if not any(exporters.values()):
        return Settings(enabled=False, reason="every OTEL_*_EXPORTER is none", raw=raw)

    level_name = (raw.get(OTEL_PYTHON_LOG_HANDLER_LEVEL) or "").strip().lower()
    return Settings(
        enabled=True,
        exporters=exporters,
        service_name=(raw.get(OTEL_SERVICE_NAME) or "").strip() or DEFAULT_SERVICE_NAME,
        resource_attributes=parse_key_values(raw.get(OTEL_RESOURCE_ATTRIBUTES)),
        sampler=(raw.get(OTEL_TRACES_SAMPLER) or "").strip() or None,
        sampler_arg=raw.get(OTEL_TRACES_SAMPLER_ARG),
        log_level=_LEVELS.get(level_name, DEFAULT_LOG_LEVEL),
        raw=raw,
    )
