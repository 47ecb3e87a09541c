import threading
from collections import Counter

from odoo import SUPERUSER_ID, api
from odoo.exceptions import ConcurrencyError
from odoo.tests import TransactionCase, tagged

SOURCE = "concurrency-test"
N_INTENTS = 300


@tagged("post_install", "-at_install")
class TestConcurrentWorkers(TransactionCase):
    """Two workers on two real cursors (two PostgreSQL sessions), committing as the cron does."""

    def setUp(self):
        super().setUp()
        self.addCleanup(self._cleanup)
        with self.registry.cursor() as cr:
            env = api.Environment(cr, SUPERUSER_ID, {})
            env["ipai.pulser.intent"].create(
                [{"intent_type": "odoo.healthcheck", "args": {}, "source": SOURCE} for _ in range(N_INTENTS)]
            )

    def _cleanup(self):
        with self.registry.cursor() as cr:
            cr.execute("DELETE FROM ipai_pulser_intent WHERE source = %s", (SOURCE,))

    def _worker(self, name, barrier, errors, claims):
        try:
            with self.registry.cursor() as cr:
                env = api.Environment(cr, SUPERUSER_ID, {})
                Intent = env["ipai.pulser.intent"]
                barrier.wait(timeout=30)
                while True:
                    stats = Intent._run_worker(limit=10, worker_id=f"odoo:test:{name}", commit=True)
                    claims[name] += stats["claimed"]
                    if not stats["claimed"]:
                        break
        except Exception as exc:
            errors.append(repr(exc))

    def test_two_workers_never_claim_the_same_intent(self):
        barrier = threading.Barrier(2)
        errors, claims = [], Counter()
        threads = [threading.Thread(target=self._worker, args=(name, barrier, errors, claims)) for name in ("w1", "w2")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        self.assertEqual(errors, [])
        with self.registry.cursor() as cr:
            cr.execute(
                "SELECT state, attempts, count(*) FROM ipai_pulser_intent WHERE source = %s GROUP BY 1, 2",
                (SOURCE,),
            )
            self.assertEqual(cr.fetchall(), [("succeeded", 1, N_INTENTS)], "nothing lost, nothing run twice")
            cr.execute(
                """
                SELECT e.intent_id, count(*), min(e.worker)
                  FROM ipai_pulser_intent_event e JOIN ipai_pulser_intent i ON i.id = e.intent_id
                 WHERE i.source = %s AND e.event_type = 'claimed'
                 GROUP BY 1
                """,
                (SOURCE,),
            )
            rows = cr.fetchall()
        self.assertEqual(len(rows), N_INTENTS)
        self.assertEqual({count for _id, count, _w in rows}, {1}, "each intent claimed exactly once")
        self.assertEqual(sum(claims.values()), N_INTENTS)
        by_worker = Counter(worker for _id, _count, worker in rows)
        self.assertEqual(set(by_worker), {"odoo:test:w1", "odoo:test:w2"}, "both workers did work")


@tagged("post_install", "-at_install")
class TestIdempotencyRace(TransactionCase):
    def test_idempotency_key_taken_by_a_concurrent_commit_asks_for_a_retry(self):
        """The key's winner committed after this transaction's snapshot: the unique index refuses
        our insert, but the winner is invisible here (REPEATABLE READ). ConcurrencyError makes
        Odoo run the request again, which then returns the winner's intent."""
        Intent = self.env["ipai.pulser.intent"]
        Intent.search_count([])  # this transaction's snapshot is taken
        self.addCleanup(self._cleanup)
        with self.registry.cursor() as cr:
            api.Environment(cr, SUPERUSER_ID, {})["ipai.pulser.intent"]._submit(
                intent_type="odoo.healthcheck", args={}, source=SOURCE, idempotency_key="race-1"
            )
        with self.assertRaises(ConcurrencyError):
            Intent._submit(intent_type="odoo.healthcheck", args={}, source=SOURCE, idempotency_key="race-1")

    def _cleanup(self):
        with self.registry.cursor() as cr:
            cr.execute("DELETE FROM ipai_pulser_intent WHERE source = %s", (SOURCE,))
