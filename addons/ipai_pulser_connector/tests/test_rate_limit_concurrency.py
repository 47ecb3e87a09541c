"""The rate limit is one budget for every Odoo worker: concurrent requests on separate
PostgreSQL sessions (one per thread, as Odoo workers have) are charged exactly."""

import threading
from collections import Counter

from odoo import SUPERUSER_ID, api
from odoo.tests import TransactionCase, tagged

from ..services.exceptions import RateLimited
from .test_client_scope import wait_for_a_fresh_minute

LIMIT = 50
THREADS = 12
TAKES = 10


@tagged("post_install", "-at_install")
class TestRateLimitConcurrency(TransactionCase):
    def setUp(self):
        super().setUp()
        # committed, so that the other sessions see the client
        with self.registry.cursor() as cr:
            env = api.Environment(cr, SUPERUSER_ID, {})
            self.client_id = env["ipai.pulser.client"].create({"name": "concurrent agent"}).id
        self.addCleanup(self._cleanup)

    def _cleanup(self):
        with self.registry.cursor() as cr:
            cr.execute("DELETE FROM ipai_pulser_client WHERE id = %s", (self.client_id,))

    def test_concurrent_requests_on_separate_sessions_get_exactly_the_limit(self):
        barrier = threading.Barrier(THREADS)
        outcomes, errors = Counter(), []
        retry_afters = set()

        def requester():
            try:
                with self.registry.cursor() as cr:
                    env = api.Environment(cr, SUPERUSER_ID, {})
                    client = env["ipai.pulser.client"].browse(self.client_id)
                    Rate = env["ipai.pulser.client.rate"]
                    barrier.wait(timeout=30)
                    for _ in range(TAKES):
                        try:
                            Rate._take(client, LIMIT)
                            outcomes["accepted"] += 1
                        except RateLimited as exc:
                            outcomes["refused"] += 1
                            retry_afters.add(exc.retry_after)
            except Exception as exc:
                errors.append(repr(exc))

        wait_for_a_fresh_minute(needed=30)
        threads = [threading.Thread(target=requester) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        self.assertEqual(errors, [], "no serialization failure, no deadlock")
        self.assertEqual(dict(outcomes), {"accepted": LIMIT, "refused": THREADS * TAKES - LIMIT})
        self.assertTrue(retry_afters and all(1 <= s <= 60 for s in retry_afters), retry_afters)
        with self.registry.cursor() as cr:
            cr.execute("SELECT used FROM ipai_pulser_client_rate WHERE client_id = %s", (self.client_id,))
            self.assertEqual(cr.fetchone(), (LIMIT,))

    def test_a_new_minute_starts_from_zero(self):
        with self.registry.cursor() as cr:
            env = api.Environment(cr, SUPERUSER_ID, {})
            client = env["ipai.pulser.client"].browse(self.client_id)
            Rate = env["ipai.pulser.client.rate"]
            wait_for_a_fresh_minute()
            self.assertEqual(Rate._take(client, 1), 1)
            with self.assertRaises(RateLimited):
                Rate._take(client, 1)
            cr.execute("UPDATE ipai_pulser_client_rate SET minute = minute - 1 WHERE client_id = %s", (client.id,))
            cr.commit()  # pylint: disable=invalid-commit
            self.assertEqual(Rate._take(client, 1), 1, "the previous minute's count is not carried over")
