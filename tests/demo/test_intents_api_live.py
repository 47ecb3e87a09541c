"""The intents API's per-client rate limit under real concurrency: a real Odoo 19 (its
threaded server gives every request a cursor, a PostgreSQL session, of its own) answers a
burst of concurrent signed submissions of one client, and exactly its budget gets through.

Odoo's test server (HttpCase) runs every request on the test's one cursor, one at a time,
so this cannot be shown inside the addon's tests. Installs the addons into a throwaway
database and serves it (about a minute); skipped without Odoo 19.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import requests

from ipai_ops.demo.intents import API_PATH, OdooRpc, signed_headers

from .test_demo_odoo import odoo  # noqa: F401 (the fixture: the addons installed and served)

LIMIT = 20
THREADS = 8
PER_THREAD = 5


def test_concurrent_requests_of_one_client_get_exactly_its_budget(odoo):  # noqa: F811
    url, db = odoo
    rpc = OdooRpc(url, db, "admin", "admin")
    client_id = rpc.execute(
        "ipai.pulser.client",
        "create",
        [{"name": "burst agent", "allowed_intent_types": "odoo.healthcheck", "rate_limit_per_minute": LIMIT}],
    )[0]
    key = rpc.execute("ipai.pulser.client", "action_show_new_key", [client_id])["params"]["message"]
    key_id = rpc.execute("ipai.pulser.client", "read", [client_id], ["key_id"])[0]["key_id"]

    # the burst must not straddle two clock minutes (two budgets)
    left = 60 - time.time() % 60
    if left < 30:
        time.sleep(left + 0.1)
    barrier = threading.Barrier(THREADS)
    statuses: Counter[int] = Counter()
    retry_after: list[str] = []
    errors: list[str] = []

    def burst(n: int) -> None:
        try:
            session = requests.Session()
            barrier.wait(timeout=30)
            for i in range(PER_THREAD):
                body = json.dumps({"type": "odoo.healthcheck", "args": {"echo": f"{n}-{i}"}}).encode()
                headers = {
                    **signed_headers(
                        key_id, key, method="POST", target=API_PATH, body=body, timestamp=int(time.time())
                    ),
                    "Content-Type": "application/json",
                }
                resp = session.post(url + API_PATH, data=body, headers=headers, timeout=60)
                statuses[resp.status_code] += 1
                if resp.status_code == 429:
                    assert resp.json()["ipai"]["code"] == "API.RATE_LIMITED"
                    retry_after.append(resp.headers["Retry-After"])
        except Exception as exc:  # reported below, with the thread's number
            errors.append(f"thread {n}: {exc!r}")

    threads = [threading.Thread(target=burst, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert errors == []
    assert dict(statuses) == {201: LIMIT, 429: THREADS * PER_THREAD - LIMIT}
    assert all(1 <= int(value) <= 60 for value in retry_after), retry_after
    created = rpc.execute("ipai.pulser.intent", "search_count", [("source", "=", key_id)])
    assert created == LIMIT, "a refused request created nothing"
