import threading
from collections import Counter

import psycopg2.errors
from odoo import SUPERUSER_ID, api
from odoo.exceptions import ConcurrencyError
from odoo.tests import TransactionCase, tagged
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from ..services import telemetry
from ..worker import claim_committed

SOURCE = "concurrency-test"
N_INTENTS = 300


@tagged("post_install", "-at_install")
class TestConcurrentWorkers(TransactionCase):
    """Two workers on two real cursors (two PostgreSQL sessions), committing as the cron does."""

    def setUp(self):
        super().setUp()
        self.addCleanup(self._cleanup)
        self.reader = InMemoryMetricReader()
        telemetry.use_providers(None, MeterProvider(metric_readers=[self.reader]))
        self.addCleanup(telemetry.use_providers, None, None)
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
                    claims[f"{name}:conflicts"] += stats["claim_conflicts"]
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
        self.assertEqual(claims["w1"] + claims["w2"], N_INTENTS)
        by_worker = Counter(worker for _id, _count, worker in rows)
        self.assertEqual(set(by_worker), {"odoo:test:w1", "odoo:test:w2"}, "both workers did work")
        # a lost race is skipped (READ COMMITTED claim), never raised and retried
        self.assertEqual((claims["w1:conflicts"], claims["w2:conflicts"]), (0, 0))
        self.assertEqual(claim_conflict_points(self.reader), [], "ipai.intent.claim.conflicts never added to")

    def test_two_claimers_in_a_tight_loop_skip_lost_races(self):
        """The benchmark's claim figure: two workers doing nothing but claim, so their claims
        overlap all the time. Under REPEATABLE READ a lost race raised a serialization failure;
        the READ COMMITTED claim skips it: no conflict, no intent claimed twice, none left."""
        barrier = threading.Barrier(2)
        errors, conflicts, claimed = [], Counter(), {"w1": [], "w2": []}

        def claimer(name):
            try:
                with self.registry.cursor() as cr:
                    Intent = api.Environment(cr, SUPERUSER_ID, {})["ipai.pulser.intent"]
                    barrier.wait(timeout=30)
                    while conflicts[name] < 20:
                        try:
                            got = claim_committed(Intent, 5, f"odoo:test:{name}")
                        except psycopg2.errors.SerializationFailure:
                            conflicts[name] += 1
                            continue
                        if not got:
                            break
                        claimed[name].extend(got.ids)
            except Exception as exc:
                errors.append(repr(exc))

        threads = [threading.Thread(target=claimer, args=(name,)) for name in claimed]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        self.assertEqual(errors, [])
        self.assertEqual(dict(conflicts), {})
        ids = claimed["w1"] + claimed["w2"]
        self.assertEqual(len(ids), N_INTENTS)
        self.assertEqual(len(set(ids)), N_INTENTS, "no intent claimed twice")
        with self.registry.cursor() as cr:
            cr.execute(
                "SELECT state, lease_owner IS NOT NULL, count(*) FROM ipai_pulser_intent"
                " WHERE source = %s GROUP BY 1, 2",
                (SOURCE,),
            )
            self.assertEqual(cr.fetchall(), [("assigned", True, N_INTENTS)], "all claimed under a lease")

    def test_a_lost_race_on_a_callers_repeatable_read_transaction_counts_as_a_conflict(self):
        """The counter is real: a worker on a caller's transaction (commit=False, REPEATABLE
        READ) whose snapshot predates another worker's committed claim gets a serialization
        failure, claims nothing this round, and counts it (stats and metric)."""
        Intent = self.env["ipai.pulser.intent"]
        Intent.search_count([])  # this transaction's snapshot: all of SOURCE's intents queued
        with self.registry.cursor() as cr:
            other = api.Environment(cr, SUPERUSER_ID, {})["ipai.pulser.intent"]
            self.assertEqual(len(claim_committed(other, N_INTENTS, "odoo:test:other")), N_INTENTS)
        stats = Intent._run_worker(limit=5, worker_id="odoo:test:late", commit=False)
        self.assertEqual((stats["claimed"], stats["claim_conflicts"]), (0, 1))
        points = claim_conflict_points(self.reader)
        self.assertEqual([(dict(p.attributes), p.value) for p in points], [({"ipai.worker.step": "claim"}, 1)])


def claim_conflict_points(reader):
    data = reader.get_metrics_data()
    if data is None:
        return []
    return [
        point
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == telemetry.METRIC_CLAIM_CONFLICTS
        for point in metric.data.data_points
    ]


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
