"""A write-only Standard Webhooks signing secret (``whsec_<base64 key>``) on a model.

Alert rules (``ipai.alert.rule``) and the connector's API clients (``ipai.pulser.client``)
sign what they POST with such a secret. The key lives in a column of its own
(``webhook_secret_value``, added by :meth:`IpaiWebhookSecretMixin.init`), never in a
field, so no read, export or search returns it: ``webhook_secret`` always reads empty and
``webhook_secret_set`` says whether one is stored. Server code reads it with
``_webhook_secret()``.
"""

import base64
import binascii
import secrets

from odoo import api, fields, models
from odoo.exceptions import ValidationError
from odoo.tools import SQL

WEBHOOK_SECRET_PREFIX = "whsec_"  # pragma: allowlist secret
WEBHOOK_SECRET_MIN_BYTES = 24
WEBHOOK_SECRET_MAX_BYTES = 64


def decode_webhook_secret(secret, env):
    """The key bytes of a ``whsec_<base64>`` secret, or a ValidationError (the secret is never quoted)."""
    secret = (secret or "").strip()
    if not secret.startswith(WEBHOOK_SECRET_PREFIX):
        raise ValidationError(
            env._("A webhook signing secret looks like whsec_<base64 key> (Standard Webhooks); this one does not.")
        )
    try:
        key = base64.b64decode(secret[len(WEBHOOK_SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError(env._("The webhook signing secret after whsec_ is not valid base64.")) from None
    if not WEBHOOK_SECRET_MIN_BYTES <= len(key) <= WEBHOOK_SECRET_MAX_BYTES:
        raise ValidationError(
            env._(
                "The webhook signing key must be %(min)s to %(max)s bytes (got %(n)s).",
                min=WEBHOOK_SECRET_MIN_BYTES,
                max=WEBHOOK_SECRET_MAX_BYTES,
                n=len(key),
            )
        )
    return key


class IpaiWebhookSecretMixin(models.AbstractModel):
    _name = "ipai.webhook.secret.mixin"
    _description = "Write-only webhook signing secret"

    webhook_secret = fields.Char(
        string="Webhook signing secret",
        compute="_compute_webhook_secret",
        inverse="_inverse_webhook_secret",
        groups="ipai_reliability.group_ipai_reliability_manager",
        copy=False,
        help="whsec_<base64 key>, shared with the receiver (Standard Webhooks). Stored once, never shown again.",
    )
    webhook_secret_set = fields.Boolean(compute="_compute_webhook_secret", string="Webhook secret set")

    def init(self):
        super().init()
        # Odoo calls init() on abstract models too: only a model with a table gets the column.
        if self._abstract or not self._auto:
            return
        self.env.cr.execute(
            SQL("ALTER TABLE %s ADD COLUMN IF NOT EXISTS webhook_secret_value text", SQL.identifier(self._table))
        )

    def _compute_webhook_secret(self):
        stored = {}
        if self.ids:
            self.env.cr.execute(
                SQL(
                    "SELECT id, webhook_secret_value IS NOT NULL FROM %s WHERE id = ANY(%s)",
                    SQL.identifier(self._table),
                    list(self.ids),
                )
            )
            stored = dict(self.env.cr.fetchall())
        for rec in self:
            rec.webhook_secret = ""
            rec.webhook_secret_set = stored.get(rec.id, False)

    def _inverse_webhook_secret(self):
        for rec in self:
            rec._store_webhook_secret(rec.webhook_secret)

    def _store_webhook_secret(self, value):
        """Check and store ``value``; an empty one keeps the stored secret."""
        self.ensure_one()
        value = (value or "").strip()
        if not value:
            return
        decode_webhook_secret(value, self.env)
        self.env.cr.execute(
            SQL("UPDATE %s SET webhook_secret_value = %s WHERE id = %s", SQL.identifier(self._table), value, self.id)
        )
        self.invalidate_recordset(["webhook_secret_set"])

    @api.private
    def _webhook_secret(self):
        """The stored signing secret (``whsec_...``) or None; server code only."""
        self.ensure_one()
        self.env.cr.execute(
            SQL("SELECT webhook_secret_value FROM %s WHERE id = %s", SQL.identifier(self._table), self.id)
        )
        row = self.env.cr.fetchone()
        return row[0] if row else None

    def _clear_webhook_secret(self):
        self.env.cr.execute(
            SQL("UPDATE %s SET webhook_secret_value = NULL WHERE id = ANY(%s)", SQL.identifier(self._table), self.ids)
        )
        self.invalidate_recordset(["webhook_secret", "webhook_secret_set"])

    @api.private
    @api.model
    def new_webhook_secret(self):
        """A fresh ``whsec_`` secret of 32 random bytes (for documentation and tests)."""
        return WEBHOOK_SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()
