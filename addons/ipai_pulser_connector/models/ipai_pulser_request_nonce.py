from datetime import timedelta

from odoo import api, fields, models

from ..services.signing import REPLAY_WINDOW_SECONDS


class IpaiPulserRequestNonce(models.Model):
    """Signed requests seen within the replay window: a repeat is a replay.

    ``signature`` holds the request's replay key: ``v2:<nonce>`` for scheme v2 (each request
    carries a new nonce), the signature itself for the deprecated v1 (whose signatures of two
    empty-body requests in one second are equal, hence the nonce)."""

    _name = "ipai.pulser.request.nonce"
    _description = "Pulser Signed Request Seen"
    _order = "id desc"

    key_id = fields.Char(required=True, readonly=True)
    signature = fields.Char(string="Replay key", required=True, readonly=True)
    request_timestamp = fields.Integer(readonly=True)
    received_at = fields.Datetime(required=True, readonly=True, default=fields.Datetime.now, index=True)

    _signature_uniq = models.Constraint("UNIQUE(key_id, signature)", "This signed request was already received.")

    @api.model
    def _remember(self, key_id, signature, timestamp):
        """True the first time (key_id, replay key) is seen; False on a replay.

        ON CONFLICT keeps this race-free: of two concurrent deliveries exactly one wins.
        """
        self.env.cr.execute(
            """
            INSERT INTO ipai_pulser_request_nonce
                   (key_id, signature, request_timestamp, received_at, create_uid, create_date,
                    write_uid, write_date)
            VALUES (%s, %s, %s, now() at time zone 'UTC', %s, now() at time zone 'UTC',
                    %s, now() at time zone 'UTC')
            ON CONFLICT (key_id, signature) DO NOTHING
            RETURNING id
            """,
            (key_id, signature, timestamp, self.env.uid, self.env.uid),
        )
        return self.env.cr.fetchone() is not None

    @api.model
    def _gc_expired(self):
        """Forget replay keys older than twice the window (a stale timestamp is refused anyway)."""
        limit = fields.Datetime.now() - timedelta(seconds=2 * REPLAY_WINDOW_SECONDS)
        self.env.cr.execute("DELETE FROM ipai_pulser_request_nonce WHERE received_at < %s", (limit,))
        return self.env.cr.rowcount
