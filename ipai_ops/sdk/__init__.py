"""Failure envelopes for Python services: WSGI/ASGI middleware, a decorator, webhook checks.

An exception escaping a handler becomes an RFC 9457 problem answer, an exception event
on the current OpenTelemetry span and, with a DSN, a row in ``ops.agent_errors``; see
docs/services.md. Nothing here imports a web framework.
"""

from __future__ import annotations

from ipai_ops.sdk.asgi import ASGIProblemMiddleware
from ipai_ops.sdk.errors import Failure, WebhookRejected
from ipai_ops.sdk.reporter import (
    CORRELATION_HEADER,
    REQUEST_ID_HEADER,
    Report,
    Reporter,
    current_correlation_id,
)
from ipai_ops.sdk.webhooks import Delivery, DeliveryStore, WebhookVerifier
from ipai_ops.sdk.wsgi import WSGIProblemMiddleware

__all__ = [
    "CORRELATION_HEADER",
    "REQUEST_ID_HEADER",
    "ASGIProblemMiddleware",
    "Delivery",
    "DeliveryStore",
    "Failure",
    "Report",
    "Reporter",
    "WSGIProblemMiddleware",
    "WebhookRejected",
    "WebhookVerifier",
    "current_correlation_id",
]
