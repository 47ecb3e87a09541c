"""Completion webhooks: one signed POST per intent that reached a final state, for clients
that do not want to poll.

The worker (any ``_transition`` to a final state: ``worker.completion``) only inserts a
delivery row in its own transaction, so the message exists exactly when the final state
commits; a cron sends it, outside the worker's write path. Sending, signing (Standard
Webhooks: ``webhook-id`` is ``message_uid``, the same on every retry, so a receiver can
drop a repeat) and the backoff between attempts are ipai_reliability's alert deliveries'
(``send_webhook``, ``backoff_seconds``): one implementation for both.
"""

import json
import logging
import uuid
from datetime import timedelta

from odoo import api, fields, models
from odoo.addons.ipai_reliability.models.ipai_alert_delivery import (
    STATES,
    DeliveryFailed,
    backoff_seconds,
    send_webhook,
)

from ipai_ops.text import redact

_logger = logging.getLogger(__name__)

#: Attempts per delivery (the first included) before it fails: with the alert backoff
#: (half to all of 1, 2, 4, ... minutes, capped at an hour) the last one comes 1 to 2 hours after the first.
MAX_ATTEMPTS = 8
USER_AGENT = "ipai-pulser-webhooks/1"
#: ``type`` of the webhook's body per final state.
EVENT_TYPES = {
    "succeeded": "intent.succeeded",
    "failed": "intent.failed",
    "dead": "intent.dead",
    "cancelled": "intent.cancelled",
}
CRON_XMLID = "ipai_pulser_connector.ir_cron_ipai_pulser_connector_deliver_webhooks"


class IpaiPulserWebhookDelivery(models.Model):
    _name = "ipai.pulser.webhook.delivery"
    _inherit = ["ipai.delivery.queue.mixin"]
    _description = "Pulser Completion Webhook Delivery"
    _order = "id desc"
    _rec_name = "message_uid"
    _delivery_cron_xmlid = CRON_XMLID

    client_id = fields.Many2one("ipai.pulser.client", required=True, readonly=True, ondelete="cascade", index=True)
    intent_id = fields.Many2one("ipai.pulser.intent", required=True, readonly=True, ondelete="cascade", index=True)
    message_uid = fields.Char(string="Message id", required=True, readonly=True, help="The webhook-id header.")
    event_type = fields.Char(readonly=True)
    state = fields.Selection(STATES, required=True, default="queued", index=True, readonly=True)
    payload = fields.Json(readonly=True, help="The body, as the intent was when it reached its final state.")
    attempts = fields.Integer(readonly=True, default=0)
    next_attempt_at = fields.Datetime(readonly=True, default=fields.Datetime.now)
    sent_at = fields.Datetime(readonly=True)
    response_status = fields.Integer(string="HTTP status", readonly=True, aggregator=False)
    last_error = fields.Char(readonly=True)

    _message_uid_uniq = models.Constraint("UNIQUE(message_uid)", "A webhook message id is unique.")
    _due_idx = models.Index("(next_attempt_at, id) WHERE state IN ('queued', 'retrying')")

    # ------------------------------------------------------------------ queueing

    @api.model
    def _enqueue(self, intents):
        """Queue one delivery per intent of ``intents`` (just moved to a final state) whose
        client has a webhook URL; wake the delivery cron. Returns the deliveries."""
        todo = [rec for rec in intents if rec.client_id and rec.client_id.sudo().webhook_url]
        if not todo:
            return self.browse()
        now = fields.Datetime.now()
        deliveries = self.sudo().create(
            [
                {
                    "client_id": rec.client_id.id,
                    "intent_id": rec.id,
                    "message_uid": f"msg_{uuid.uuid4().hex}",
                    "event_type": EVENT_TYPES.get(rec.state, f"intent.{rec.state}"),
                    "payload": {
                        "type": EVENT_TYPES.get(rec.state, f"intent.{rec.state}"),
                        "timestamp": now.isoformat(timespec="milliseconds") + "Z",
                        "data": rec._api_dict(with_events=False),
                    },
                }
                for rec in todo
            ]
        )
        self._trigger_delivery()
        return deliveries

    # ------------------------------------------------------------------ sending

    @api.private
    def _attempt(self):
        """One attempt: send, record the outcome, schedule a retry with backoff or give up."""
        self.ensure_one()
        client = self.client_id.sudo()
        try:
            if not client.webhook_url:
                raise DeliveryFailed(self.env._("the client has no webhook URL any more"))
            secret = client._webhook_secret()
            if not secret:
                raise DeliveryFailed(self.env._("the client has no webhook signing secret"))
            body = json.dumps(self.payload, separators=(",", ":"), sort_keys=True, default=str)
            status, problem = (
                send_webhook(
                    self.env,
                    client.webhook_url,
                    body,
                    message_id=self.message_uid,
                    secret=secret,
                    user_agent=USER_AGENT,
                ),
                None,
            )
        except DeliveryFailed as exc:
            status, problem = exc.status, str(exc)
        attempts = self.attempts + 1
        values = {"attempts": attempts, "response_status": status or 0}
        if problem is None:
            values.update(state="sent", sent_at=fields.Datetime.now(), last_error=False)
        elif attempts >= MAX_ATTEMPTS:
            values.update(state="failed", last_error=redact(problem))
        else:
            values.update(
                state="retrying",
                last_error=redact(problem),
                next_attempt_at=fields.Datetime.now() + timedelta(seconds=backoff_seconds(attempts)),
            )
        self.write(values)
        if problem is not None:
            _logger.info("ipai_pulser: webhook delivery %s attempt %s failed: %s", self.id, attempts, problem)
        return problem is None
