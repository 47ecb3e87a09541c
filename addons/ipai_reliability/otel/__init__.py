"""Server-wide OpenTelemetry for Odoo 19, configured from the standard ``OTEL_*`` variables.

The addon's ``post_load`` calls :func:`setup_from_env` once per process. With no
OTLP endpoint and no ``OTEL_*_EXPORTER`` set (or ``OTEL_SDK_DISABLED=true``) it
returns ``False`` having imported nothing from the SDK and installed nothing: the
OpenTelemetry API stays the no-op it is by default. Otherwise it builds the tracer,
meter and logger providers (batching exporters, OTLP over HTTP/protobuf by default
or gRPC), registers them as the global providers, hooks Odoo's HTTP entry point and
cron runner (see ``_hooks``), sends the ``odoo`` logger's records at WARNING and
above as OpenTelemetry logs, and flushes everything when Odoo stops or the process
exits. docs/odoo_telemetry.md is the operator's guide.

Re-entrant for tests: ``setup_from_env(environ, force=True)`` flushes the current
pipeline and builds a new one from ``environ``; the providers themselves (and so the
resource) are built once per process, because OpenTelemetry's global providers can
only be set once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from ipai_ops.semconv import IPAI_SOURCE

from ._settings import OTEL_SEMCONV_STABILITY_OPT_IN, Settings, read_settings
from ._state import STATE

__all__ = ["force_flush", "is_enabled", "record_exception", "settings", "setup_from_env", "shutdown"]

_logger = logging.getLogger(__name__)
#: The instrumentation scope of the spans this package creates.
SCOPE = "odoo.addons.ipai_reliability"
#: Odoo-specific attributes (no semantic convention covers them).
ODOO_VERSION = "odoo.version"
ODOO_DATABASE = "odoo.database"


def is_enabled() -> bool:
    return STATE.active


def settings() -> Settings | None:
    """The settings of the active setup, ``None`` while telemetry is off."""
    return STATE.settings if STATE.active else None


def _addon_version() -> str | None:
    try:
        from odoo.modules.module import Manifest

        manifest = Manifest.for_addon("ipai_reliability")
        return manifest["version"] if manifest else None
    except Exception:  # telemetry goes on without a version rather than not at all
        _logger.debug("no ipai_reliability manifest version", exc_info=True)
        return None


def _resource_defaults() -> dict[str, str | None]:
    from opentelemetry.semconv.attributes.service_attributes import SERVICE_VERSION

    try:
        from odoo import release
        from odoo.tools import config

        odoo_version = release.version
        dbs = config.get("db_name") or []
        db = dbs[0] if isinstance(dbs, list) and len(dbs) == 1 else (dbs if isinstance(dbs, str) else None)
    except Exception:  # the resource goes without them rather than telemetry not starting
        _logger.debug("no Odoo version or database name for the resource", exc_info=True)
        odoo_version, db = None, None
    addon = _addon_version()
    # The manifest version is "<odoo series>.<x.y.z>" (19.0.1.0.0): Odoo's and the addon's at once.
    return {
        SERVICE_VERSION: addon or odoo_version,
        ODOO_VERSION: odoo_version,
        IPAI_SOURCE: "odoo",
        ODOO_DATABASE: db or None,
    }


def _install_log_handler(level: int) -> None:
    from opentelemetry.instrumentation.logging.handler import LoggingHandler

    from ._failures import FailureLogFilter

    from ._pipeline import AuditLevelFilter, audit_handler_level
    from ._settings import AUDIT_LOG_LEVEL, AUDIT_LOGGER

    _remove_log_handler()
    # One handler on two loggers: ``odoo`` from ``level``, the audit logger from INFO.
    handler = LoggingHandler(level=audit_handler_level(level), logger_provider=STATE.providers.logger_provider)
    handler.addFilter(AuditLevelFilter(level))
    handler.addFilter(FailureLogFilter(skip_prefix=__name__))
    logging.getLogger("odoo").addHandler(handler)
    audit = logging.getLogger(AUDIT_LOGGER)
    audit.addHandler(handler)
    if audit.getEffectiveLevel() > AUDIT_LOG_LEVEL:  # e.g. Odoo run with --log-level=warn
        audit.setLevel(AUDIT_LOG_LEVEL)
    STATE.log_handler = handler


def _remove_log_handler() -> None:
    from ._settings import AUDIT_LOGGER

    if STATE.log_handler is not None:
        logging.getLogger("odoo").removeHandler(STATE.log_handler)
        logging.getLogger(AUDIT_LOGGER).removeHandler(STATE.log_handler)
        STATE.log_handler = None


def _install_exit_hooks() -> None:
    if STATE.exit_hooks_installed:
        return
    import atexit

    atexit.register(_at_exit)
    try:
        from odoo.service.server import CommonServer

        # ThreadedServer/GeventServer.stop() run these; prefork workers exit through sys.exit -> atexit.
        CommonServer.on_stop(shutdown)
    except Exception:
        _logger.debug("no Odoo server stop hook", exc_info=True)
    STATE.exit_hooks_installed = True


def _at_exit() -> None:
    shutdown()
    if STATE.providers is not None:
        STATE.providers.shutdown()


def setup_from_env(environ: Mapping[str, str] | None = None, *, force: bool = False) -> bool:
    """Configure OpenTelemetry from ``environ`` (default ``os.environ``); ``True`` when active.

    Idempotent: a second call keeps the running setup unless ``force`` is true, in which
    case the running pipeline is flushed and replaced. Never raises: a broken
    telemetry configuration logs a warning and leaves Odoo untouched.
    """
    with STATE.lock:
        if STATE.active and not force:
            return True
        env = os.environ if environ is None else environ
        try:
            new = read_settings(env)
        except Exception:
            _logger.warning("OpenTelemetry: unreadable OTEL_* settings; telemetry stays off", exc_info=True)
            return False
        if STATE.active:
            _shutdown_locked()
        if not new.enabled:
            _logger.debug("OpenTelemetry off: %s", new.reason)
            return False
        try:
            return _activate(new)
        except Exception:
            _logger.warning("OpenTelemetry setup failed; telemetry stays off", exc_info=True)
            STATE.active = False
            return False


def _activate(new: Settings) -> bool:
    # opentelemetry-instrumentation-wsgi reads this once, at its first middleware: the
    # stable HTTP attribute names (http.request.method, url.path, ...) unless the
    # operator chose otherwise.
    os.environ.setdefault(OTEL_SEMCONV_STABILITY_OPT_IN, "http")
    from . import _hooks, _pipeline

    resource = _pipeline.build_resource(new, _resource_defaults())
    pipeline = _pipeline.build_pipeline(new)
    if STATE.providers is None:
        template = pipeline.metric_exporters[0] if pipeline.metric_exporters else None
        STATE.providers = _pipeline.build_providers(new, resource, template)
    else:
        STATE.providers.update_resource(resource)
    pipeline.attach(STATE.providers)
    STATE.pipeline = pipeline
    STATE.settings = new
    STATE.service_name = str(resource.attributes.get("service.name") or "odoo")
    STATE.tracer = STATE.providers.tracer_provider.get_tracer(SCOPE, _addon_version())
    if new.signal_enabled("logs"):
        _install_log_handler(new.log_level)
    _hooks.install()
    _install_exit_hooks()
    STATE.active = True
    _logger.info(
        "OpenTelemetry on: service %s, traces %s, metrics %s, logs %s",
        STATE.service_name,
        *(
            ",".join(e.endpoint or e.name for e in new.exporters.get(sig, ())) or "off"
            for sig in ("traces", "metrics", "logs")
        ),
    )
    return True


def _shutdown_locked(timeout_millis: int = 10_000) -> None:
    STATE.active = False
    _remove_log_handler()
    pipeline, STATE.pipeline = STATE.pipeline, None
    STATE.settings = None
    if pipeline is not None and STATE.providers is not None:
        pipeline.shutdown(STATE.providers, timeout_millis=timeout_millis)


def shutdown(timeout_millis: int = 10_000) -> None:
    """Flush every span, metric and log record still queued, then stop exporting.

    Safe to call at any time and more than once; a later :func:`setup_from_env` starts again.
    """
    with STATE.lock:
        try:
            _shutdown_locked(timeout_millis)
        except Exception:
            _logger.debug("OpenTelemetry shutdown failed", exc_info=True)


def force_flush(timeout_millis: int = 10_000) -> bool:
    """Export what is queued now, without stopping."""
    if not STATE.active or STATE.providers is None:
        return True
    providers = STATE.providers
    return all(
        [
            providers.tracer_provider.force_flush(timeout_millis),
            providers.meter_provider.force_flush(timeout_millis),
            providers.logger_provider.force_flush(timeout_millis),
        ]
    )


def record_exception(span, exc: BaseException) -> str | None:
    """Record ``exc`` on ``span`` as this addon does (``ipai.*`` attributes, status ERROR);
    returns the failure code. For other addons' spans (e.g. intent attempts)."""
    if not STATE.active:
        return None
    from ._failures import record_exception as _record

    return _record(span, exc, service=STATE.service_name)
