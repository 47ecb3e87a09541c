import threading
import time

from odoo.tests import TransactionCase

from ..services.exceptions import IntentTimeout
from ..services.handler_registry import intent_handler, unregister

TEST_TYPES = (
    "test.crash",
    "test.retryable",
    "test.slow",
    "test.sql_slow",
    "test.cancel_self",
    "test.wait_for_cancel",
    "test.echo",
)
#: Set by ``test.wait_for_cancel`` once its attempt runs (the ``running`` state is not
#: committed before the attempt ends, so another transaction cannot poll for it).
HANDLER_STARTED = threading.Event()


def register_test_handlers():
    """Handlers that fail on purpose; registered with the public decorator, as another addon would."""

    @intent_handler("test.crash", schema={"type": "object"})
    def crash(ctx):
        raise RuntimeError(ctx.args.get("message", "boom: the handler fell over"))

    @intent_handler("test.retryable", schema={"type": "object"})
    def retryable(ctx):
        raise IntentTimeout("upstream took too long", details={"step": "fetch"})

    @intent_handler(
        "test.slow",
        schema={"type": "object", "properties": {"timeout_s": {"type": "number"}, "sleep_s": {"type": "number"}}},
        timeout=0.05,
    )
    def slow(ctx):
        time.sleep(ctx.args.get("sleep_s", 0.1))
        ctx.check()
        return {"late": True}

    @intent_handler("test.sql_slow", schema={"type": "object"}, timeout=0.2)
    def sql_slow(ctx):
        ctx.env.cr.execute("SELECT pg_sleep(2)")
        return {"late": True}

    @intent_handler("test.cancel_self", schema={"type": "object"})
    def cancel_self(ctx):
        ctx.log("step 1 done")
        # the request is made in the attempt's own transaction
        ctx.intent._request_cancel(source="test")
        ctx.check_cancel_now()
        return {"unreachable": True}

    @intent_handler(
        "test.wait_for_cancel",
        schema={"type": "object", "properties": {"sleep_s": {"type": "number"}}},
        timeout=30,
    )
    def wait_for_cancel(ctx):
        HANDLER_STARTED.set()
        end = time.monotonic() + ctx.args.get("sleep_s", 5)
        while time.monotonic() < end:
            time.sleep(0.02)
            ctx.check()
        return {"waited": True}

    @intent_handler(
        "test.echo",
        schema={
            "type": "object",
            "required": ["value"],
            "properties": {
                "value": {"type": "string"},
                "nested": {"type": "object", "properties": {"n": {"type": "integer"}}},
            },
        },
    )
    def echo(ctx):
        ctx.tool_call("echo", size=len(ctx.args["value"]))
        return {"value": ctx.args["value"]}


def unregister_test_handlers():
    for name in TEST_TYPES:
        unregister(name)


class PulserCase(TransactionCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        register_test_handlers()
        cls.Intent = cls.env["ipai.pulser.intent"]
        cls.Event = cls.env["ipai.pulser.intent.event"]

    @classmethod
    def tearDownClass(cls):
        unregister_test_handlers()
        super().tearDownClass()

    def submit(self, intent_type="odoo.healthcheck", args=None, **kw):
        intent, _created = self.Intent._submit(intent_type=intent_type, args=args or {}, **kw)
        return intent

    def run_worker(self, **kw):
        kw.setdefault("worker_id", "odoo:test:host:1")
        return self.Intent._run_worker(**kw)

    def ops_row(self, fingerprint):
        # A fresh cursor: the test transaction runs REPEATABLE READ and would not see rows
        # committed on the ops writer's own connection after it began.
        with self.registry.cursor() as cr:
            cr.execute(
                "SELECT id, count, code, source FROM ops.agent_errors WHERE fingerprint = %s",
                (fingerprint,),
            )
            return cr.dictfetchone()
