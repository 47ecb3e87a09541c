from odoo import fields, models

from ..services.state_machine import STATE_LABELS


class IpaiPulserIntentEvent(models.Model):
    _name = "ipai.pulser.intent.event"
    _description = "Pulser Intent Event"
    _order = "id"

    intent_id = fields.Many2one("ipai.pulser.intent", required=True, ondelete="cascade", index=True, readonly=True)
    event_type = fields.Selection(
        [
            ("created", "Created"),
            ("claimed", "Claimed"),
            ("attempt_started", "Attempt started"),
            ("succeeded", "Succeeded"),
            ("attempt_failed", "Attempt failed"),
            ("lease_expired", "Lease expired"),
            ("cancel_requested", "Cancel requested"),
            ("cancel_ignored", "Cancel ignored"),
            ("cancelled", "Cancelled"),
            ("requeued", "Requeued"),
            ("transition", "Transition"),
        ],
        required=True,
        readonly=True,
    )
    from_state = fields.Selection(STATE_LABELS, readonly=True)
    to_state = fields.Selection(STATE_LABELS, readonly=True)
    attempt = fields.Integer(readonly=True)
    worker = fields.Char(readonly=True)
    failure_code = fields.Char(readonly=True)
    message = fields.Text(readonly=True)
    data = fields.Json(readonly=True)
    intent_type = fields.Char(related="intent_id.intent_type", string="Intent type")
