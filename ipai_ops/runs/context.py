"""Where a run happens: its deployment environment, trace context, settings and command line as kept."""

from __future__ import annotations

import logging
import platform
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ipai_ops import __version__, config
from ipai_ops.runs.secrets import capture_settings
from ipai_ops.text import redact

log = logging.getLogger(__name__)

_TRACEPARENT_RE = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")


def redact_argv(argv: Sequence[str]) -> list[str]:
    """The command line with secrets redacted; a value after ``--password``-like flags goes too."""
    out: list[str] = []
    hide_next = False
    for word in argv:
        if hide_next:
            out.append("[REDACTED:secret]")
            hide_next = False
            continue
        out.append(redact(word) or word)
        if re.fullmatch(r"--?[\w-]*(?:password|passwd|secret|token|api[_-]?key|auth)[\w-]*", word, re.I):
            hide_next = True
    return out


def deployment_env(environ: Mapping[str, str]) -> str | None:
    """``deployment.environment.name`` of the OTel resource (OTEL_RESOURCE_ATTRIBUTES), else "ci" in CI."""
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.semconv.attributes.deployment_attributes import DEPLOYMENT_ENVIRONMENT_NAME

        attributes = Resource.create().attributes
        value = attributes.get(DEPLOYMENT_ENVIRONMENT_NAME) or attributes.get("deployment.environment")
        if value:
            return str(value)
    except Exception:  # the SDK is optional for this; a bad attribute string must not stop a run
        log.debug("cannot read the OpenTelemetry resource", exc_info=True)
    if environ.get(config.CI, "").lower() in ("true", "1", "yes"):
        return "ci"
    return None


def trace_context(environ: Mapping[str, str]) -> tuple[str | None, str | None, str | None]:
    """(traceparent, trace_id, span_id): the active span's, else an inherited TRACEPARENT."""
    carrier: dict[str, str] = {}
    try:
        from opentelemetry import propagate, trace

        if trace.get_current_span().get_span_context().is_valid:
            propagate.inject(carrier)
    except Exception:
        log.debug("cannot read the OpenTelemetry context", exc_info=True)
    traceparent = carrier.get("traceparent") or environ.get(config.TRACEPARENT)
    trace_id, span_id = trace_ids(traceparent)
    if trace_id is None:
        return None, None, None
    return traceparent, trace_id, span_id


def trace_ids(traceparent: str | None) -> tuple[str | None, str | None]:
    """(trace_id, span_id) of a W3C ``traceparent``; (None, None) when it is not a valid one."""
    match = _TRACEPARENT_RE.match((traceparent or "").strip().lower())
    if not match or match.group(1) == "0" * 32:
        return None, None
    return match.group(1), match.group(2)


def settings_snapshot(environ: Mapping[str, str], env_name: str | None) -> dict[str, Any]:
    """``metadata.settings``: the deployment environment, the allowlisted variables, versions."""
    return {
        "env": env_name,
        "variables": capture_settings(environ),
        "versions": {
            "ipai_ops": __version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    }
