"""Every setting of the OTLP bridge: one environment variable each, one CLI flag each.

The flag is the variable's name in lowercase kebab form without the ``IPAI_BRIDGE_``
prefix (``IPAI_BRIDGE_HTTP_PORT`` <-> ``--http-port``); the DSN keeps the project-wide
``IPAI_OPS_DSN`` <-> ``--dsn``. Precedence: flag, then environment, then default.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from ipai_ops import config

#: Address both listeners bind to.
IPAI_BRIDGE_HOST = "IPAI_BRIDGE_HOST"
#: OTLP/HTTP port (the OTLP default is 4318).
IPAI_BRIDGE_HTTP_PORT = "IPAI_BRIDGE_HTTP_PORT"
#: OTLP/gRPC port (the OTLP default is 4317); 0 disables gRPC.
IPAI_BRIDGE_GRPC_PORT = "IPAI_BRIDGE_GRPC_PORT"
#: Worker processes sharing the ports through SO_REUSEPORT; 0 = one per CPU.
IPAI_BRIDGE_WORKERS = "IPAI_BRIDGE_WORKERS"
#: Bearer token senders must present (``Authorization: Bearer <token>``); empty = no auth.
IPAI_BRIDGE_TOKEN = "IPAI_BRIDGE_TOKEN"
#: Senders with their own tokens, each bound to the sources it may write (ipai_ops.bridge.auth):
#: ``<name>:<source>[,<source>...]:<token>`` per line or ``;``.
IPAI_BRIDGE_TOKENS = "IPAI_BRIDGE_TOKENS"
#: A file with IPAI_BRIDGE_TOKENS entries, one per line (``#`` comments).
IPAI_BRIDGE_TOKENS_FILE = "IPAI_BRIDGE_TOKENS_FILE"
#: Sources the shared IPAI_BRIDGE_TOKEN (or, without any token, every sender) may write.
IPAI_BRIDGE_TOKEN_SOURCES = "IPAI_BRIDGE_TOKEN_SOURCES"
#: Occurrences a sender may write per clock minute, per source (0 = no limit).
IPAI_BRIDGE_QUOTA_PER_MINUTE = "IPAI_BRIDGE_QUOTA_PER_MINUTE"
#: Occurrences a sender may write per clock hour, per source (0 = no limit).
IPAI_BRIDGE_QUOTA_PER_HOUR = "IPAI_BRIDGE_QUOTA_PER_HOUR"
#: Start on a non-loopback address without any token (only where the network itself admits no one else).
IPAI_BRIDGE_ALLOW_NO_TOKEN = "IPAI_BRIDGE_ALLOW_NO_TOKEN"
#: Largest request body accepted as sent on the wire (compressed), in bytes.
IPAI_BRIDGE_MAX_BODY_BYTES = "IPAI_BRIDGE_MAX_BODY_BYTES"
#: Largest request body after gzip decompression, in bytes (stops compression bombs).
IPAI_BRIDGE_MAX_DECOMPRESSED_BYTES = "IPAI_BRIDGE_MAX_DECOMPRESSED_BYTES"
#: Largest OTLP/JSON body after gzip decompression, in bytes (JSON costs far more to decode than protobuf).
IPAI_BRIDGE_MAX_JSON_BYTES = "IPAI_BRIDGE_MAX_JSON_BYTES"
#: Spans or log records processed per request; the rest are refused through OTLP partial success.
IPAI_BRIDGE_MAX_RECORDS = "IPAI_BRIDGE_MAX_RECORDS"
#: Requests (HTTP + gRPC) processed at once per worker; more are answered 503 / RESOURCE_EXHAUSTED.
IPAI_BRIDGE_MAX_INFLIGHT = "IPAI_BRIDGE_MAX_INFLIGHT"
#: Open OTLP/HTTP connections per worker; beyond it the oldest idle connection is closed.
IPAI_BRIDGE_MAX_CONNECTIONS = "IPAI_BRIDGE_MAX_CONNECTIONS"
#: Seconds a connection may stay without a complete request head (after opening or after an answer).
IPAI_BRIDGE_IDLE_TIMEOUT_SECONDS = "IPAI_BRIDGE_IDLE_TIMEOUT_SECONDS"
#: Seconds a request's body may take to arrive once its head has; then 408 and the connection is closed.
IPAI_BRIDGE_BODY_TIMEOUT_SECONDS = "IPAI_BRIDGE_BODY_TIMEOUT_SECONDS"
#: CPU seconds one request may spend decoding and extracting (off the event loop); then 413.
IPAI_BRIDGE_CPU_SECONDS = "IPAI_BRIDGE_CPU_SECONDS"
#: PostgreSQL connections (= writer threads) per worker.
IPAI_BRIDGE_DB_POOL = "IPAI_BRIDGE_DB_POOL"
#: Seconds advertised in ``Retry-After`` / gRPC ``RetryInfo`` on retryable refusals.
IPAI_BRIDGE_RETRY_AFTER_SECONDS = "IPAI_BRIDGE_RETRY_AFTER_SECONDS"
#: ``source`` of occurrences whose telemetry carries no ``ipai.source`` attribute.
IPAI_BRIDGE_DEFAULT_SOURCE = "IPAI_BRIDGE_DEFAULT_SOURCE"
#: Seconds between two samples of one error stored by one worker (0 = every request's latest).
IPAI_BRIDGE_SAMPLE_REFRESH_SECONDS = "IPAI_BRIDGE_SAMPLE_REFRESH_SECONDS"
#: Start even on the pure-Python protobuf backend (about 200x slower than upb).
IPAI_BRIDGE_ALLOW_PYTHON_PROTOBUF = "IPAI_BRIDGE_ALLOW_PYTHON_PROTOBUF"
#: Event loop: ``auto`` (uvloop when installed), ``uvloop`` or ``asyncio``.
IPAI_BRIDGE_EVENT_LOOP = "IPAI_BRIDGE_EVENT_LOOP"
#: Python logging level of the bridge.
IPAI_BRIDGE_LOG_LEVEL = "IPAI_BRIDGE_LOG_LEVEL"
#: Directory for prometheus-client multiprocess files (set by the supervisor when workers > 1).
PROMETHEUS_MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Settings:
    host: str = "0.0.0.0"
    http_port: int = 4318
    grpc_port: int = 4317
    workers: int = 0
    token: str = ""
    tokens: str = ""
    tokens_file: str = ""
    token_sources: str = "*"
    quota_per_minute: int = 0
    quota_per_hour: int = 0
    allow_no_token: bool = False
    max_body_bytes: int = 4 * 1024 * 1024
    max_decompressed_bytes: int = 16 * 1024 * 1024
    max_json_bytes: int = 2 * 1024 * 1024
    max_records: int = 8192
    max_inflight: int = 8
    max_connections: int = 256
    idle_timeout_seconds: int = 30
    body_timeout_seconds: int = 30
    cpu_seconds: float = 5.0
    db_pool: int = 2
    retry_after_seconds: int = 5
    default_source: str = "otlp"
    sample_refresh_seconds: int = 60
    allow_python_protobuf: bool = False
    event_loop: str = "auto"
    log_level: str = "INFO"
    dsn: str = config.DEFAULT_DSN

    @property
    def effective_workers(self) -> int:
        return self.workers if self.workers > 0 else (os.cpu_count() or 1)

    def validate(self) -> list[str]:
        """Problems that make these settings unusable, one line each."""
        problems = []
        if not 1 <= self.http_port <= 65535:
            problems.append("http_port must be 1..65535")
        if not 0 <= self.grpc_port <= 65535:
            problems.append("grpc_port must be 0..65535 (0 disables gRPC)")
        if self.workers < 0:
            problems.append("workers must be >= 0 (0 = one per CPU)")
        for name in (
            "max_body_bytes",
            "max_decompressed_bytes",
            "max_json_bytes",
            "max_records",
            "max_inflight",
            "max_connections",
            "idle_timeout_seconds",
            "body_timeout_seconds",
            "db_pool",
        ):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        if not self.cpu_seconds > 0:
            problems.append("cpu_seconds must be > 0")
        if self.max_decompressed_bytes < self.max_body_bytes:
            problems.append("max_decompressed_bytes must be >= max_body_bytes")
        if self.retry_after_seconds < 0:
            problems.append("retry_after_seconds must be >= 0")
        if self.sample_refresh_seconds < 0:
            problems.append("sample_refresh_seconds must be >= 0 (0 = refresh on every request)")
        if self.event_loop not in ("auto", "uvloop", "asyncio"):
            problems.append("event_loop must be auto, uvloop or asyncio")
        elif self.event_loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
            problems.append("event_loop uvloop is not installed (use auto or asyncio)")
        for name in ("quota_per_minute", "quota_per_hour"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0 (0 = no limit)")
        sender_problem = _senders_problem(self)
        if sender_problem:
            problems.append(sender_problem)
        if not self.default_source.strip():
            problems.append("default_source must not be empty")
        # getLevelName maps a known name to its number (anything else to "Level X").
        if not isinstance(logging.getLevelName(self.log_level.upper()), int):
            problems.append("log_level must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
        dsn_problem = _dsn_problem(self.dsn)
        if dsn_problem:
            problems.append(dsn_problem)
        return problems


def _senders_problem(settings: Settings) -> str | None:
    """IPAI_BRIDGE_TOKENS, its file and IPAI_BRIDGE_TOKEN_SOURCES, parsed as the workers will."""
    from ipai_ops.bridge.auth import SenderConfigError, Senders

    try:
        Senders.from_settings(settings)
    except SenderConfigError as exc:
        return str(exc)
    return None


def _is_loopback(host: str) -> bool:
    """True when every address ``host`` names is a loopback address (unresolvable: False)."""
    import ipaddress
    import socket

    if not host.strip():
        return False  # every interface
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False
    addresses = {info[4][0].split("%", 1)[0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)


def exposure_problem(settings: Settings) -> str | None:
    """A bridge reachable from other hosts must authenticate its senders: one line, or None."""
    if settings.token or settings.tokens.strip() or settings.tokens_file or settings.allow_no_token:
        return None
    if _is_loopback(settings.host):
        return None
    return (
        f"refusing to listen on {settings.host or '(all interfaces)'} without a token: anyone who reaches "
        "the port could write errors; set IPAI_BRIDGE_TOKEN (or IPAI_BRIDGE_TOKENS), bind 127.0.0.1 "
        "(--host), or set IPAI_BRIDGE_ALLOW_NO_TOKEN=1 where the network admits no one else"
    )


def _dsn_problem(dsn: str) -> str | None:
    """Checked at start: a malformed DSN would otherwise fail every request with a 500."""
    from ipai_ops.store import InvalidDsn, check_dsn

    try:
        check_dsn(dsn)
    except InvalidDsn as exc:
        return f"dsn is not a PostgreSQL connection string: {exc.reason}"
    return None


#: field name -> environment variable (the DSN is the project-wide variable).
ENV_VARS: dict[str, str] = {
    "host": IPAI_BRIDGE_HOST,
    "http_port": IPAI_BRIDGE_HTTP_PORT,
    "grpc_port": IPAI_BRIDGE_GRPC_PORT,
    "workers": IPAI_BRIDGE_WORKERS,
    "token": IPAI_BRIDGE_TOKEN,
    "tokens": IPAI_BRIDGE_TOKENS,
    "tokens_file": IPAI_BRIDGE_TOKENS_FILE,
    "token_sources": IPAI_BRIDGE_TOKEN_SOURCES,
    "quota_per_minute": IPAI_BRIDGE_QUOTA_PER_MINUTE,
    "quota_per_hour": IPAI_BRIDGE_QUOTA_PER_HOUR,
    "allow_no_token": IPAI_BRIDGE_ALLOW_NO_TOKEN,
    "max_body_bytes": IPAI_BRIDGE_MAX_BODY_BYTES,
    "max_decompressed_bytes": IPAI_BRIDGE_MAX_DECOMPRESSED_BYTES,
    "max_json_bytes": IPAI_BRIDGE_MAX_JSON_BYTES,
    "max_records": IPAI_BRIDGE_MAX_RECORDS,
    "max_inflight": IPAI_BRIDGE_MAX_INFLIGHT,
    "max_connections": IPAI_BRIDGE_MAX_CONNECTIONS,
    "idle_timeout_seconds": IPAI_BRIDGE_IDLE_TIMEOUT_SECONDS,
    "body_timeout_seconds": IPAI_BRIDGE_BODY_TIMEOUT_SECONDS,
    "cpu_seconds": IPAI_BRIDGE_CPU_SECONDS,
    "db_pool": IPAI_BRIDGE_DB_POOL,
    "retry_after_seconds": IPAI_BRIDGE_RETRY_AFTER_SECONDS,
    "default_source": IPAI_BRIDGE_DEFAULT_SOURCE,
    "sample_refresh_seconds": IPAI_BRIDGE_SAMPLE_REFRESH_SECONDS,
    "allow_python_protobuf": IPAI_BRIDGE_ALLOW_PYTHON_PROTOBUF,
    "event_loop": IPAI_BRIDGE_EVENT_LOOP,
    "log_level": IPAI_BRIDGE_LOG_LEVEL,
    "dsn": config.IPAI_OPS_DSN,
}

_HELP = {
    "host": "address to bind",
    "http_port": "OTLP/HTTP port",
    "grpc_port": "OTLP/gRPC port (0 disables gRPC)",
    "workers": "worker processes sharing the ports (0 = one per CPU)",
    "token": "bearer token required from senders (empty = none)",
    "tokens": "senders: <name>:<source>[,<source>...]:<token>, separated by ; (prefer the variable)",
    "tokens_file": "file of sender entries, one per line",
    "token_sources": "sources the shared token (or, without tokens, anyone) may write; * = any non-reserved",
    "quota_per_minute": "occurrences per clock minute per sender and source (0 = no limit)",
    "quota_per_hour": "occurrences per clock hour per sender and source (0 = no limit)",
    "allow_no_token": "listen on a non-loopback address without any token",
    "max_body_bytes": "largest request body on the wire (compressed)",
    "max_decompressed_bytes": "largest request body after gzip decompression",
    "max_json_bytes": "largest OTLP/JSON body after gzip decompression",
    "max_records": "spans or log records processed per request; the rest are refused (partial success)",
    "max_inflight": "requests processed at once per worker; beyond it 503 / RESOURCE_EXHAUSTED",
    "max_connections": "open OTLP/HTTP connections (oldest idle one closed beyond it) and gRPC calls per worker",
    "idle_timeout_seconds": "seconds a connection may wait without a complete request head",
    "body_timeout_seconds": "seconds a request body may take to arrive (then 408)",
    "cpu_seconds": "CPU seconds one request may spend decoding and extracting (then 413)",
    "db_pool": "PostgreSQL connections (writer threads) per worker",
    "retry_after_seconds": "Retry-After advertised on retryable refusals",
    "default_source": "ops source for telemetry without an ipai.source attribute",
    "sample_refresh_seconds": "seconds between two stored samples of one error per worker (0 = every request)",
    "allow_python_protobuf": "start even on the slow pure-Python protobuf backend",
    "event_loop": "auto | uvloop | asyncio",
    "log_level": "logging level",
    "dsn": "PostgreSQL DSN of the ops database",
}


def _flag(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def _coerce(field_name: str, raw: str) -> Any:
    default = getattr(Settings(), field_name)
    if isinstance(default, bool):
        flag = raw.strip().lower()
        if flag not in _TRUE | _FALSE:
            raise ValueError(f"{ENV_VARS[field_name]}: {raw!r} is not a boolean (1/0, true/false, yes/no, on/off)")
        return flag in _TRUE
    if isinstance(default, int):
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{ENV_VARS[field_name]}: {raw!r} is not an integer") from None
    if isinstance(default, float):
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"{ENV_VARS[field_name]}: {raw!r} is not a number") from None
    return raw


def from_env(environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name, var in ENV_VARS.items():
        if env.get(var) not in (None, ""):
            values[name] = _coerce(name, env[var])
    return Settings(**values)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per setting; defaults stay None so the environment can fill them."""
    for item in fields(Settings):
        var = ENV_VARS[item.name]
        if isinstance(item.default, bool):
            parser.add_argument(
                _flag(item.name), action="store_true", default=None, help=f"{_HELP[item.name]} (env {var})"
            )
        else:
            kind = type(item.default) if isinstance(item.default, (int, float)) else str
            parser.add_argument(
                _flag(item.name),
                type=kind,
                default=None,
                help=f"{_HELP[item.name]} (env {var}; default {item.default!r})",
            )


def from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Settings:
    base = from_env(environ)
    overrides = {
        item.name: getattr(args, item.name) for item in fields(Settings) if getattr(args, item.name, None) is not None
    }
    return replace(base, **overrides)
