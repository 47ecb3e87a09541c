from odoo import api, fields, models

from ..services.exceptions import RateLimited
from ..worker.lease import read_committed

#: Charge one request of ``client`` to the current clock minute of the database's clock
#: (``floor(epoch / 60)``), unless ``limit`` requests were already charged to it. One
#: statement: ``ON CONFLICT DO UPDATE`` locks the client's row and, under READ COMMITTED,
#: re-evaluates the ``WHERE`` on the latest committed count, so concurrent requests on any
#: number of Odoo workers are charged one after another and exactly ``limit`` pass. A
#: refused request charges nothing (no row returned). ``retry_after``: whole seconds until
#: the minute turns (at least 1).
_TAKE_SQL = """
    WITH clock AS (SELECT extract(epoch FROM clock_timestamp()) AS t),
    charged AS (
        INSERT INTO ipai_pulser_client_rate AS r (client_id, minute, used)
        SELECT %(client)s, floor(t / 60)::integer, 1 FROM clock
            ON CONFLICT (client_id) DO UPDATE
               SET minute = EXCLUDED.minute,
                   used = CASE WHEN r.minute = EXCLUDED.minute THEN r.used + 1 ELSE 1 END
             WHERE r.minute <> EXCLUDED.minute OR r.used < %(limit)s
        RETURNING used
    )
    SELECT (SELECT used FROM charged), greatest(ceil((floor(t / 60) + 1) * 60 - t), 1)::integer FROM clock
"""


class IpaiPulserClientRate(models.Model):
    """Requests of one API client in the current clock minute: its rate limit's counter.

    Apart from the client row on purpose: the API's request transaction writes the client
    (``last_used_at``) under REPEATABLE READ, and a counter committed on that row by a
    concurrent request would make that write a serialization failure. One row per client,
    overwritten in place; written in SQL only, on a READ COMMITTED cursor of its own
    (``worker.lease.read_committed``) committed before the request goes on, so every Odoo
    worker shares one budget and a request rolled back later stays counted.
    """

    _name = "ipai.pulser.client.rate"
    _description = "Pulser API Client Request Count"
    _order = "client_id"
    _log_access = False

    client_id = fields.Many2one("ipai.pulser.client", required=True, readonly=True, ondelete="cascade")
    minute = fields.Integer(
        readonly=True, aggregator=False, help="floor(epoch / 60) of the minute 'used' counts (database clock)."
    )
    used = fields.Integer(readonly=True, help="Requests charged in that minute.")

    _client_uniq = models.Constraint("UNIQUE(client_id)", "A client has one request counter.")

    @api.model
    def _take(self, client, limit):
        """Charge one request of ``client``; raise API.RATE_LIMITED (with ``retry_after``)
        when ``limit`` requests were already charged in this minute."""
        with read_committed(self.env) as env:
            env.cr.execute(_TAKE_SQL, {"client": client.id, "limit": int(limit)})
            used, retry_after = env.cr.fetchone()
        if used is None:
            raise RateLimited(
                f"rate limit of {limit} requests per minute reached for client {client.key_id}; "
                f"retry in {retry_after} s",
                retry_after=retry_after,
                details={"limit_per_minute": limit, "retry_after": retry_after},
            )
        return used
