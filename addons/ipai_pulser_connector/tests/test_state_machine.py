from odoo.tests import tagged

from ..models.ipai_pulser_intent import state_writes_allowed
from ..services import state_machine as sm
from ..services.exceptions import StateConflict
from .common import PulserCase

LEGAL = {
    ("queued", "assigned"),
    ("queued", "cancelled"),
    ("assigned", "running"),
    ("assigned", "queued"),
    ("assigned", "cancelled"),
    ("assigned", "dead"),
    ("running", "succeeded"),
    ("running", "failed"),
    ("running", "cancelled"),
    ("running", "queued"),
    ("running", "dead"),
    ("failed", "queued"),
    ("dead", "queued"),
}


@tagged("post_install", "-at_install")
class TestStateMachine(PulserCase):
    def test_pure_table_is_the_documented_one(self):
        for old in sm.STATES:
            for new in sm.STATES:
                with self.subTest(old=old, new=new):
                    self.assertEqual(sm.is_legal(old, new), (old, new) in LEGAL)

    def test_every_transition_through_the_orm(self):
        """All 49 (from, to) pairs: the legal ones change state and log one event; the
        illegal ones raise INTENT.STATE_CONFLICT and change nothing."""
        intents = self.Intent.create(
            [{"intent_type": "odoo.healthcheck", "args": {}} for _ in range(len(sm.STATES) ** 2)]
        )
        for index, (old, new) in enumerate((o, n) for o in sm.STATES for n in sm.STATES):
            intent = intents[index]
            # test backdoor: place the intent in ``old`` without the machine
            with state_writes_allowed():
                intent.write({"state": old})
            events_before = len(intent.event_ids)
            with self.subTest(old=old, new=new):
                if (old, new) in LEGAL:
                    intent._transition(new, message="test")
                    self.assertEqual(intent.state, new)
                    last = intent.event_ids.sorted("id")[-1]
                    self.assertEqual((last.from_state, last.to_state), (old, new))
                else:
                    with self.assertRaises(StateConflict) as caught:
                        intent._transition(new)
                    self.assertEqual(caught.exception.failure_code, "INTENT.STATE_CONFLICT")
                    self.assertIn(f"{old} -> {new}", str(caught.exception))
                    self.assertEqual(intent.state, old)
                    self.assertEqual(len(intent.event_ids), events_before)

    def test_state_is_not_writable_directly(self):
        intent = self.submit()
        with self.assertRaises(StateConflict):
            intent.write({"state": "succeeded"})
        # The context key the guard used to trust: any RPC caller can pass it.
        with self.assertRaises(StateConflict):
            intent.with_context(ipai_pulser_transition=True).write({"state": "succeeded"})
        self.assertEqual(intent.state, "queued")

    def test_create_always_queued_with_an_event(self):
        intent = self.Intent.create({"intent_type": "odoo.healthcheck", "state": "succeeded"})
        self.assertEqual(intent.state, "queued")
        self.assertEqual(intent.event_ids.mapped("event_type"), ["created"])

    def test_cancel_queued_is_immediate_and_terminal_refuses(self):
        intent = self.submit()
        self.assertEqual(intent._request_cancel(source="test"), "cancelled")
        self.assertEqual(intent.state, "cancelled")
        self.assertTrue(intent.cancel_acknowledged_at)
        with self.assertRaises(StateConflict):
            intent._request_cancel(source="test")

    def test_requeue_only_from_failed_or_dead(self):
        intent = self.submit()
        with self.assertRaises(StateConflict):
            intent.action_requeue()
        with state_writes_allowed():
            intent.write({"state": "dead", "attempts": 3})
        intent.action_requeue()
        self.assertEqual(intent.state, "queued")
        self.assertEqual(intent.max_attempts, 6)

    def test_capacity_never_rejects(self):
        """More intents than a batch: the rest wait in queued, none is refused."""
        intents = self.Intent.create([{"intent_type": "odoo.healthcheck", "args": {}} for _ in range(7)])
        stats = self.run_worker(limit=3)
        self.assertEqual(stats["claimed"], 3)
        self.assertEqual(sorted(intents.mapped("state")).count("queued"), 4)
        self.assertEqual(sorted(intents.mapped("state")).count("succeeded"), 3)
