"""The project's telemetry attribute and event names, in one place (docs/specs/telemetry_v1.md).

Standard names come from ``opentelemetry.semconv``; these are the ``ipai.*`` ones the
bridge reads and the producers (Odoo, the Pulser connector, the demo agent) write.
"""

from __future__ import annotations

#: ops ``source`` of the telemetry (resource or record attribute): keys the occurrence.
IPAI_SOURCE = "ipai.source"
#: An explicit failure code: wins over signature classification.
IPAI_FAILURE_CODE = "ipai.failure.code"
IPAI_FAILURE_FINGERPRINT = "ipai.failure.fingerprint"
#: The id a producer used for its own direct ops write, so the telemetry copy counts once.
IPAI_OCCURRENCE_ID = "ipai.occurrence_id"
IPAI_CORRELATION_ID = "ipai.correlation_id"

IPAI_INTENT_ID = "ipai.intent.id"
IPAI_INTENT_TYPE = "ipai.intent.type"
IPAI_INTENT_ATTEMPT = "ipai.intent.attempt"
IPAI_INTENT_OUTCOME = "ipai.intent.outcome"
#: ``queued``, ``assigned``, ``running`` on ``ipai.intent.queue.depth``.
IPAI_INTENT_STATE = "ipai.intent.state"
#: Who cancelled (``api``, ``odoo_ui``, ``agent``, ``other``) on ``ipai.intent.cancel.latency``.
IPAI_INTENT_CANCEL_PATH = "ipai.intent.cancel.path"
#: True for a queued intent cancelled at once (no worker held it; latency 0).
IPAI_INTENT_CANCEL_INSTANT = "ipai.intent.cancel.instant"
#: ``ops.agent_runs.run_id`` of an audit event when the intent belongs to a recorded run.
IPAI_RUN_ID = "ipai.run_id"

IPAI_CRON_ID = "ipai.cron.id"
IPAI_CRON_NAME = "ipai.cron.name"
IPAI_CRON_STATUS = "ipai.cron.status"

#: semconv ``event.name`` (incubating namespace in opentelemetry-semantic-conventions).
EVENT_NAME = "event.name"
#: The span event name of the exception semantic conventions.
EXCEPTION_EVENT = "exception"
#: Audit log events (``event.name``): never error reports, whatever their severity.
AUDIT_EVENT_RUN_STATE = "run.state"
AUDIT_EVENT_RUN_CANCEL = "run.cancel"
AUDIT_EVENTS = frozenset({AUDIT_EVENT_RUN_STATE, AUDIT_EVENT_RUN_CANCEL})
#: The Python logger of audit events: exported at INFO (the ``odoo`` logger only from WARNING).
AUDIT_LOGGER = "ipai.audit"
