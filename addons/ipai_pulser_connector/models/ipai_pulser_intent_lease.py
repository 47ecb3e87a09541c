from odoo import fields, models


class IpaiPulserIntentLease(models.Model):
    """The renewed lease of a running attempt (``worker.lease.renew``).

    Apart from the intent row on purpose: the worker's attempt transaction writes the intent
    at the end under REPEATABLE READ, and a heartbeat committed on that same row meanwhile
    would make that write a serialization failure. One row per intent, overwritten by each
    renewal; written and read in SQL by the worker and the reaper only.
    """

    _name = "ipai.pulser.intent.lease"
    _description = "Pulser Intent Lease Renewal"
    _order = "intent_id"
    _log_access = False

    intent_id = fields.Many2one("ipai.pulser.intent", required=True, readonly=True, ondelete="cascade")
    attempt = fields.Integer(required=True, readonly=True)
    expires_at = fields.Datetime(required=True, readonly=True)

    _intent_uniq = models.Constraint("UNIQUE(intent_id)", "An intent has one renewed lease.")
