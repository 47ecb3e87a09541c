"""A queue of outgoing deliveries worked by a cron: the due rows oldest first, bounded.

Alert deliveries (``ipai.alert.delivery``) and the connector's completion webhooks
(``ipai.pulser.webhook.delivery``) keep one row per message with ``state`` (queued,
retrying, sent, failed) and ``next_attempt_at``; each model sends one attempt in its own
``_attempt()`` (which records the outcome and schedules a retry with backoff or gives up).
This mixin holds what is the same for both: picking the due rows without blocking another
worker (``FOR UPDATE SKIP LOCKED``), bounded in number and time, and "Retry now".
"""

import time

from odoo import api, fields, models
from odoo.exceptions import AccessError
from odoo.tools import SQL

DELIVER_BATCH = 50
#: A cron run stops starting new attempts after this many seconds (each attempt has its own
#: request timeout), so one slow receiver cannot hold the cron past its next run.
DELIVER_BUDGET_SECONDS = 50


class IpaiDeliveryQueueMixin(models.AbstractModel):
    _name = "ipai.delivery.queue.mixin"
    _description = "Outgoing delivery queue worked by a cron"

    #: The cron that works the queue (``module.xmlid``): triggered when rows are queued or
    #: retried now.
    _delivery_cron_xmlid = None

    @api.model
    def _trigger_delivery(self):
        cron = self.env.ref(self._delivery_cron_xmlid, raise_if_not_found=False) if self._delivery_cron_xmlid else None
        if cron:
            cron.sudo()._trigger()

    @api.model
    def _cron_deliver(self, limit=DELIVER_BATCH):
        """Attempt the due deliveries (oldest first, bounded in number and time)."""
        started = time.monotonic()
        self.flush_model(["state", "next_attempt_at"])
        self.env.cr.execute(
            SQL(
                """
                SELECT id FROM %s
                 WHERE state IN ('queued', 'retrying') AND next_attempt_at <= clock_timestamp() AT TIME ZONE 'UTC'
                 ORDER BY next_attempt_at, id
                 LIMIT %s
                   FOR UPDATE SKIP LOCKED
                """,
                SQL.identifier(self._table),
                limit,
            )
        )
        done = 0
        for delivery in self.sudo().browse([row[0] for row in self.env.cr.fetchall()]):
            if time.monotonic() - started > DELIVER_BUDGET_SECONDS:
                break
            delivery._attempt()
            done += 1
        return done

    def action_retry_now(self):
        if not self.env.user.has_group("ipai_reliability.group_ipai_reliability_manager"):
            raise AccessError(self.env._("Only Reliability managers retry deliveries."))
        todo = self.sudo().filtered(lambda d: d.state in ("queued", "retrying", "failed"))
        todo.write({"state": "retrying", "next_attempt_at": fields.Datetime.now()})
        self._trigger_delivery()
        return True
