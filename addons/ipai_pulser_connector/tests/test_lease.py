"""Leases between real workers (real cursors, each committing as the cron does): two reapers
racing skip each other's rows, a long handler keeps its intent by heartbeats, and one that
stops renewing loses it to the reaper and its late outcome is discarded."""

import threading
import time
from collections import Counter
from datetime import timedelta

import psycopg2.errors
from odoo import SUPERUSER_ID, api, fields
from odoo.tests import TransactionCase, tagged

from ..models.ipai_pulser_intent import state_writes_allowed
from ..services.handler_registry import intent_handler, unregister
from ..worker import reap_committed

SOURCE = "lease-test"
LEASE = 2.0
KEEPS = "test.lease_keeps_renewing"
STOPS = "test.lease_stops_renewing"


def _env(cr):
    return api.Environment(cr, SUPERUSER_ID, {})


@tagged("post_install", "-at_install")
class TestLeases(TransactionCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()

        @intent_handler(KEEPS, schema={"type": "object"}, timeout=60, lease=LEASE)
        def keeps(ctx):
            end = time.monotonic() + 3 * LEASE
            while time.monotonic() < end:  # three leases long, renewing through ctx.check()
                time.sleep(0.05)
                ctx.check()
            return {"kept": True}

        @intent_handler(STOPS, schema={"type": "object"}, timeout=60, lease=LEASE)
        def stops(ctx):
            ctx.heartbeat()
            time.sleep(3 * LEASE)  # hung: no heartbeat for three leases
            return {"late": True}

        cls.addClassCleanup(unregister, KEEPS)
        cls.addClassCleanup(unregister, STOPS)

    def setUp(self):
        super().setUp()
        self.addCleanup(self._cleanup)

    def _cleanup(self):
        with self.registry.cursor() as cr:
            cr.execute("DELETE FROM ipai_pulser_intent WHERE source = %s", (SOURCE,))

    def _submit(self, intent_type, **kw):
        with self.registry.cursor() as cr:
            intent, _created = _env(cr)["ipai.pulser.intent"]._submit(
                intent_type=intent_type, args={}, source=SOURCE, priority=10**6, **kw
            )
            return intent.id

    def _rows(self, sql, params):
        with self.registry.cursor() as cr:
            cr.execute(sql, params)
            return cr.fetchall()

    def _worker_and_reaper(self, intent_id):
        """One worker running ``intent_id`` and a reaper sweeping every 0.2 s until it is done."""
        out, done = {}, threading.Event()

        def worker():
            try:
                with self.registry.cursor() as cr:
                    out["stats"] = _env(cr)["ipai.pulser.intent"]._run_worker(
                        limit=1, worker_id="odoo:test:leaseholder", commit=True
                    )
            except Exception as exc:
                out["worker_error"] = repr(exc)
            finally:
                done.set()

        def reaper():
            out["reaped"] = 0
            try:
                while not done.wait(0.2):
                    with self.registry.cursor() as cr:
                        out["reaped"] += reap_committed(_env(cr)["ipai.pulser.intent"])
            except Exception as exc:
                out["reaper_error"] = repr(exc)

        threads = [threading.Thread(target=worker), threading.Thread(target=reaper)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        self.assertNotIn("worker_error", out)
        self.assertNotIn("reaper_error", out)
        return out

    def _events(self, intent_id):
        rows = self._rows(
            "SELECT event_type FROM ipai_pulser_intent_event WHERE intent_id = %s ORDER BY id", (intent_id,)
        )
        return [row[0] for row in rows]

    def test_a_handler_longer_than_its_lease_keeps_it_while_it_renews(self):
        intent_id = self._submit(KEEPS, max_attempts=1)
        started = fields.Datetime.now()
        out = self._worker_and_reaper(intent_id)
        self.assertEqual((out["stats"]["succeeded"], out["reaped"]), (1, 0))
        [(state, attempts, result)] = self._rows(
            "SELECT state, attempts, result FROM ipai_pulser_intent WHERE id = %s", (intent_id,)
        )
        self.assertEqual((state, attempts, result["data"]), ("succeeded", 1, {"kept": True}))
        self.assertEqual(self._events(intent_id), ["created", "claimed", "attempt_started", "succeeded"])
        # the renewals were real: the last one reached past the original lease
        [(expires_at,)] = self._rows(
            "SELECT expires_at FROM ipai_pulser_intent_lease WHERE intent_id = %s AND attempt = 1", (intent_id,)
        )
        self.assertGreater(expires_at, started + timedelta(seconds=2 * LEASE))

    def test_a_handler_that_stops_renewing_is_reaped_and_its_outcome_discarded(self):
        intent_id = self._submit(STOPS, max_attempts=1)
        out = self._worker_and_reaper(intent_id)
        self.assertEqual(out["reaped"], 1)
        self.assertEqual((out["stats"]["lease_lost"], out["stats"]["succeeded"]), (1, 0))
        [(state, attempts, code, result)] = self._rows(
            "SELECT state, attempts, failure_code, result FROM ipai_pulser_intent WHERE id = %s", (intent_id,)
        )
        self.assertEqual((state, attempts, code), ("dead", 1, "INTENT.LEASE_EXPIRED"))
        self.assertFalse(result["ok"], "the late success did not overwrite the reaper's outcome")
        self.assertEqual(
            self._events(intent_id), ["created", "claimed", "attempt_started", "attempt_failed"], "failed once"
        )

    def test_two_reapers_racing_reap_each_intent_once_and_never_conflict(self):
        """Under REPEATABLE READ a reap that lost a race raised a serialization failure; in
        READ COMMITTED with SKIP LOCKED it is skipped."""
        n = 60
        with self.registry.cursor() as cr:
            env = _env(cr)
            intents = env["ipai.pulser.intent"].create(
                [{"intent_type": "odoo.healthcheck", "args": {}, "source": SOURCE} for _ in range(n)]
            )
            past = fields.Datetime.now() - timedelta(seconds=5)
            with state_writes_allowed():
                intents.write({"state": "assigned", "lease_owner": "odoo:test:dead", "lease_expires_at": past})
        barrier = threading.Barrier(2)
        errors, conflicts, reaped = [], Counter(), Counter()

        def reaper(name):
            try:
                with self.registry.cursor() as cr:
                    Intent = _env(cr)["ipai.pulser.intent"]
                    barrier.wait(timeout=30)
                    while conflicts[name] < 20:
                        try:
                            got = reap_committed(Intent, limit=3)
                        except psycopg2.errors.SerializationFailure:
                            conflicts[name] += 1
                            continue
                        if not got:
                            break
                        reaped[name] += got
            except Exception as exc:
                errors.append(repr(exc))

        threads = [threading.Thread(target=reaper, args=(name,)) for name in ("r1", "r2")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        self.assertEqual(errors, [])
        self.assertEqual(dict(conflicts), {})
        self.assertEqual(reaped["r1"] + reaped["r2"], n)
        self.assertEqual(
            self._rows("SELECT state, count(*) FROM ipai_pulser_intent WHERE source = %s GROUP BY 1", (SOURCE,)),
            [("queued", n)],
        )
        rows = self._rows(
            """
            SELECT count(*) FROM ipai_pulser_intent_event e JOIN ipai_pulser_intent i ON i.id = e.intent_id
             WHERE i.source = %s AND e.event_type = 'lease_expired' GROUP BY e.intent_id
            """,
            (SOURCE,),
        )
        self.assertEqual((len(rows), {count for (count,) in rows}), (n, {1}), "each intent reaped exactly once")
