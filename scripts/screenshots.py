#!/usr/bin/env python3
"""Screenshots of the Reliability addon for the README, taken by headless Chromium.

    python scripts/screenshots.py [--out docs/img] [--keep-db]

1. a throwaway database with both addons and demo data (``scripts/odoo_layer.py``'s
   install, with a private config so ``var/`` is left alone);
2. real rows in ``ops`` through ``ipai_ops.store.write_batch`` (classified against the
   registry, envelopes built by ``ipai_ops.envelope``; two errors resolved, one of them
   then regressed by a newer release, one ignored), and a resolution record through the
   ORM over JSON-RPC;
3. Odoo on a free local port, an admin session from ``/web/session/authenticate``;
4. Debian's Chromium headless driven over the DevTools protocol (``websocket-client``):
   the session cookie is set with ``Network.setCookie``, each page is loaded with
   ``Page.navigate``, the script waits until the view has rendered real records, then
   ``Page.captureScreenshot``;
5. everything is stopped and the database dropped, also on errors and Ctrl-C.

Writes failure_modes_kanban.png, agent_errors_console.png and resolution_form.png.
Chromium: ``/usr/bin/chromium`` (``apt-get install -y chromium``) or ``--chromium PATH``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import odoo_layer  # noqa: E402
import requests  # noqa: E402
import websocket  # noqa: E402

from ipai_ops import store  # noqa: E402
from ipai_ops.classify import classify  # noqa: E402
from ipai_ops.envelope import build_envelope  # noqa: E402
from ipai_ops.taxonomy import default_registry  # noqa: E402

SHOTS = {
    "failure_modes_kanban.png": (
        "/odoo/action-ipai_reliability.ipai_failure_mode_action?view_type=kanban",
        ".o_kanban_renderer .o_kanban_record:not(.o_kanban_ghost)",
    ),
    "agent_errors_console.png": (
        "/odoo/action-ipai_reliability.ipai_agent_error_action?view_type=list",
        ".o_list_renderer .o_data_row",
    ),
    # the resolution id is appended at run time
    "resolution_form.png": (
        "/odoo/action-ipai_reliability.ipai_resolution_action/{resolution_id}",
        ".o_form_view .o_form_sheet",
    ),
}
WIDTH, HEIGHT = 1440, 900

# (code, source, service, error type, message, occurrences, hours ago of the last one)
ERRORS = [
    ("WEBHOOK.SIGNATURE_INVALID", "bridge", "github-webhooks", "ipai.webhooks.SignatureError",
     "HMAC signature mismatch for delivery 7f3c2a91-44be-4d1e-9a2f-0c1d2e3f4a5b", 37, 0.2),
    ("INTENT.HANDLER_CRASHED", "odoo", "odoo", "KeyError",
     "handler odoo.config.snapshot crashed: KeyError 'company_id' on intent 4182", 12, 0.5),
    ("INTENT.TIMEOUT", "odoo", "odoo", "TimeoutError",
     "intent 4177 exceeded its 300 s budget in odoo.module.status", 5, 3),
    ("INTENT.LEASE_EXPIRED", "odoo", "odoo", "ipai.pulser.LeaseExpired",
     "lease of intent 4150 expired after 120 s (worker odoo-2:4211 gone)", 3, 7),
    ("API.AUTH_MISSING", "bridge", "pulser-api", "ipai.api.AuthMissing",
     "request to /pulser/v1/intents without a bearer token from 10.0.4.17", 58, 1),
    ("API.REQUEST_INVALID", "bridge", "pulser-api", "ipai.api.RequestInvalid",
     "body failed validation: 'intent_type' is a required property", 21, 2),
    ("UNCLASSIFIED.UNKNOWN", "github_actions", "ci", "RuntimeError",
     "docker buildx: failed to solve: process \"/bin/sh -c pip install -r requirements.txt\" "
     "did not complete successfully: exit code 137", 4, 26),
    ("UNCLASSIFIED.UNKNOWN", "cli", "agent-coder", "ValueError",
     "tool call returned malformed JSON at position 1042", 2, 30),
    ("WEBHOOK.TIMESTAMP_STALE", "bridge", "github-webhooks", "ipai.webhooks.StaleTimestamp",
     "delivery timestamp 2026-11-20T09:14:03Z older than 300 s", 6, 40),
    ("INTENT.ARGS_INVALID", "odoo", "odoo", "ipai.pulser.ArgsInvalid",
     "args.modules must be a list of strings, got 'sale'", 9, 52),
    ("WEBHOOK.DELIVERY_DUPLICATE", "bridge", "github-webhooks", "ipai.webhooks.Duplicate",
     "delivery 0b2c9d1e already processed", 14, 70),
    ("INTENT.TYPE_UNKNOWN", "cli", "agent-ops", "ipai.pulser.TypeUnknown",
     "no handler for intent type 'odoo.db.vacuum'", 1, 100),
    ("AGENT.PROVIDER_KEY_MISSING", "cli", "agent-coder", "ipai.agents.ProviderAuthError",
     "model provider rejected the API key (401) for model gpt-4.1", 7, 5),
    ("AGENT.VERIFICATION_FAILED", "cli", "agent-coder", "ipai.agents.VerificationFailed",
     "verification stage rejected the patch: 3 of 41 tests failed", 11, 9),
    ("BUILD.TEST_FAILED", "github_actions", "ci", "ipai.ci.TestsFailed",
     "pytest: 2 failed, 318 passed in tests/test_bridge.py", 16, 4),
    ("BUILD.TIMEOUT", "github_actions", "ci", "TimeoutError", "job 'odoo-tests' exceeded 45 minutes", 2, 60),
    ("CI.SSOT_INVALID", "github_actions", "ci", "ipai.ci.RegistryInvalid",
     "ssot/errors/failure_modes.yaml: runbook docs/runbooks/failures/X.md does not exist", 3, 20),
]  # fmt: skip


def log(msg: str) -> None:
    print(f"screenshots: {msg}", flush=True)


# ---------------------------------------------------------------------------------- data


def _dsn(db: str) -> str:
    opts = odoo_layer._db_options()
    parts = {"dbname": db, "host": opts["db_host"], "port": opts["db_port"], "user": opts["db_user"]}
    if opts["db_password"]:
        parts["password"] = opts["db_password"]
    return " ".join(f"{k}={v}" for k, v in parts.items())


def seed_ops(db: str) -> dict[str, str]:
    """Write the ERRORS through the product's batch writer; returns code -> fingerprint."""
    registry = default_registry()
    now = datetime.now(timezone.utc)
    occurrences, fingerprints = [], {}
    for n, (code, source, service, error_type, message, count, hours_ago) in enumerate(ERRORS):
        cls = classify(registry, explicit_code=code)
        context = {"source": source, "service": service, "env": "production"}
        for i in range(count):
            occurred = now - timedelta(hours=hours_ago + i * (6 + n) / max(count, 1))
            envelope = build_envelope(
                cls, message=message, error_type=error_type, context=context, occurred_at=occurred
            )
            fingerprint = envelope["error"]["fingerprint"]
            fingerprints.setdefault(f"{code}:{source}", fingerprint)
            occurrences.append(
                store.ErrorOccurrence(
                    source=source,
                    occurrence_id=f"screenshot-{n}-{i}",
                    fingerprint=fingerprint,
                    code=cls.code,
                    severity=cls.mode.severity,
                    message=envelope["error"]["message"],
                    occurred_at=occurred,
                    error_type=error_type,
                    service=service,
                    trace_id=uuid.uuid4().hex,
                    span_id=uuid.uuid4().hex[:16],
                    service_version="1.4.0" if i % 3 else "1.3.2",
                    sample=envelope,
                )
            )
    conn = store.connect(_dsn(db))
    try:
        result = store.write_batch(conn, occurrences)
        log(f"ops: {result.new_occurrences} occurrences, {result.errors_touched} errors")
        with conn, conn.cursor() as cur:
            # Lifecycle as the console produces it: resolve two, ignore one ...
            cur.execute(
                "UPDATE ops.agent_errors SET status = 'resolved', resolved_at = now() - interval '2 days', "
                "resolved_in_version = '1.4.0' WHERE fingerprint = ANY(%s)",
                ([fingerprints["WEBHOOK.DELIVERY_DUPLICATE:bridge"], fingerprints["INTENT.TIMEOUT:odoo"]],),
            )
            cur.execute(
                "UPDATE ops.agent_errors SET status = 'ignored' WHERE fingerprint = %s",
                (fingerprints["INTENT.TYPE_UNKNOWN:cli"],),
            )
        # ... and a new occurrence from a newer release regresses one (ops.next_status).
        code, source, service, error_type, message, _count, _ago = ERRORS[2]
        cls = classify(registry, explicit_code=code)
        store.write_batch(
            conn,
            [
                store.ErrorOccurrence(
                    source=source, occurrence_id="screenshot-regression", fingerprint=fingerprints[f"{code}:{source}"],
                    code=cls.code, severity=cls.mode.severity, message=message, occurred_at=now - timedelta(minutes=20),
                    error_type=error_type, service=service, trace_id=uuid.uuid4().hex, span_id=uuid.uuid4().hex[:16],
                    service_version="1.5.0",
                )
            ],
        )  # fmt: skip
    finally:
        conn.close()
    return fingerprints


class Odoo:
    """JSON-RPC client of the running server, logged in as admin."""

    def __init__(self, base: str, db: str) -> None:
        self.base, self.db = base, db
        self.http = requests.Session()
        res = self.rpc("/web/session/authenticate", {"db": db, "login": "admin", "password": "admin"})
        if not res or not res.get("uid"):
            raise SystemExit(f"admin login failed: {res}")
        self.session_id = self.http.cookies.get("session_id")

    def rpc(self, path: str, params: dict):
        body = {"jsonrpc": "2.0", "method": "call", "id": 1, "params": params}
        reply = self.http.post(self.base + path, json=body, timeout=60).json()
        if reply.get("error"):
            raise SystemExit(f"{path}: {json.dumps(reply['error'])[:2000]}")
        return reply.get("result")

    def call(self, model: str, method: str, *args, **kwargs):
        return self.rpc(
            f"/web/dataset/call_kw/{model}/{method}",
            {"model": model, "method": method, "args": list(args), "kwargs": kwargs},
        )


def seed_odoo(odoo: Odoo, fingerprints: dict[str, str]) -> int:
    """Assignments and a complete resolution record; returns the resolution's id."""
    users = odoo.call("res.users", "search_read", [["login", "=", "admin"]], fields=["id"])
    fields = odoo.call("res.users", "fields_get", attributes=["type"])
    if "tour_enabled" in fields:  # no onboarding tour over the screenshots
        odoo.call("res.users", "write", [users[0]["id"]], {"tour_enabled": False})
    # Two errors assigned (the console's Assignee column), to admin and the demo user.
    demo = odoo.call("res.users", "search_read", [["login", "=", "demo"]], fields=["id"]) or users
    for key, user in (("WEBHOOK.SIGNATURE_INVALID:bridge", users[0]), ("INTENT.HANDLER_CRASHED:odoo", demo[0])):
        errors = odoo.call("ipai.agent.error", "search", [["fingerprint", "=", fingerprints[key]]])
        odoo.call("ipai.agent.error", "action_assign", errors, user=user["id"])
    # The demo data's resolutions are short drafts: write a complete one to show the form.
    fingerprint = fingerprints["INTENT.HANDLER_CRASHED:odoo"]
    errors = odoo.call("ipai.agent.error", "search_read", [["fingerprint", "=", fingerprint]], fields=["id"])
    modes = odoo.call("ipai.failure.mode", "search_read", [["code", "=", "INTENT.HANDLER_CRASHED"]], fields=["id"])
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    return odoo.call(
        "ipai.resolution",
        "create",
        {
            "name": "Snapshot handler crashed on top-level companies",
            "failure_mode_id": modes[0]["id"] if modes else False,
            "code": "INTENT.HANDLER_CRASHED",
            "fingerprint": fingerprint,
            "error_id": errors[0]["id"] if errors else False,
            "stage": "review",
            "author": "octo-dev",
            "summary": "odoo.config.snapshot intents failed for 12 tenants after the 1.4.0 release.",
            "root_cause": "The handler read company.parent_id.company_id, which is empty for top-level companies "
            "created before 1.4.0; the KeyError escaped the handler.",
            "fix": "Read the company from the intent's env and fall back to the main company; "
            "the handler now raises INTENT.ARGS_INVALID for unknown companies instead of crashing.",
            "pr_url": "https://github.com/ipai/ipai-ops/pull/318",
            "fixed_in_release": "1.4.1",
            "evidence": "Occurrences stopped at 14:02 UTC after the 1.4.1 deploy; "
            "trace 4bf92f3577b34da6 shows the fixed path.",
            "regression_test": "addons/ipai_pulser_connector/tests/test_handlers.py::test_snapshot_top_level_company",
            "follow_ups": "Add a contract test for every handler's company lookup\n"
            "Alert on INTENT.HANDLER_CRASHED > 5/h",
            "incident_start": (now - timedelta(hours=30)).strftime("%Y-%m-%d %H:%M:%S"),
            "incident_end": (now - timedelta(hours=2)).strftime("%Y-%m-%d %H:%M:%S"),
        },
    )


# ---------------------------------------------------------------------------------- chromium


class Chromium:
    """Headless Chromium driven over the DevTools protocol."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.port = odoo_layer._free_port()
        self.profile = workdir / "chromium-profile"
        self.proc = subprocess.Popen(
            [
                binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={self.profile}",
                f"--window-size={WIDTH},{HEIGHT}", f"--remote-debugging-port={self.port}",
                "--remote-debugging-address=127.0.0.1", "--remote-allow-origins=*", "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(workdir / "chromium.log").open("wb"),
        )  # fmt: skip
        self.ws = None
        self._id = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                targets = requests.get(f"http://127.0.0.1:{self.port}/json", timeout=2).json()
                page = next(t for t in targets if t.get("type") == "page")
                self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
                break
            except (requests.RequestException, StopIteration, ValueError, OSError):
                time.sleep(0.3)
        if self.ws is None:
            self.close()
            raise SystemExit(f"chromium did not start (see {workdir / 'chromium.log'})")
        self.send("Page.enable")
        self.send("Network.enable")
        self.send("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT, deviceScaleFactor=1, mobile=False)

    def send(self, method: str, **params):
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def shoot(self, url: str, ready_selector: str, path: Path, *, timeout: float = 60.0) -> None:
        self.send("Page.navigate", url=url)
        ready = (
            "(() => !!document.querySelector('.o_web_client')"
            f" && !!document.querySelector({json.dumps(ready_selector)})"
            " && !document.querySelector('.o_blockUI, .o_loading_indicator, .o-main-components-container .o_dialog')"
            " && !location.pathname.startsWith('/web/login'))()"
        )
        deadline = time.monotonic() + timeout
        while not self.evaluate(ready):
            if time.monotonic() > deadline:
                raise SystemExit(f"{url}: {ready_selector} never rendered (at {self.evaluate('location.href')})")
            time.sleep(0.3)
        time.sleep(1.5)  # fonts, avatars, progress bars settle
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=False)["data"]
        path.write_bytes(base64.b64decode(data))
        log(f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path} <- {url}")

    def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(OSError):
                self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# ---------------------------------------------------------------------------------- main


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"odoo exited with {proc.returncode}")
        try:
            if requests.get(url, timeout=2).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise SystemExit(f"odoo did not answer {url}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "img"))
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--keep-db", action="store_true")
    args = parser.parse_args(argv)
    if not Path(args.chromium).exists():
        print(f"no Chromium at {args.chromium}: apt-get install -y chromium", file=sys.stderr)
        return 2
    odoo_src = odoo_layer.locate_odoo()
    if odoo_src is None:
        print("Odoo 19 not found (ODOO_SRC, import odoo, /opt/odoo)", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    work = Path(tempfile.mkdtemp(prefix="ipai_shots_"))
    port = odoo_layer._free_port()
    config = odoo_layer.write_config(odoo_src, work / "odoo.conf", data_dir=work / "data", http_port=port)
    db = f"ipai_shots_{uuid.uuid4().hex[:8]}"
    server = chrome = None
    try:
        odoo_layer.install(odoo_src, config, db, demo=True)
        fingerprints = seed_ops(db)
        server = subprocess.Popen(
            odoo_layer.odoo_bin(odoo_src, config, "-d", db, "--db-filter", f"^{db}$", "--max-cron-threads", "0"),
            stdout=(work / "odoo.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/web/login", server)
        odoo = Odoo(base, db)
        resolution_id = seed_odoo(odoo, fingerprints)
        chrome = Chromium(args.chromium, work)
        chrome.send(
            "Network.setCookie", name="session_id", value=odoo.session_id, domain="127.0.0.1", path="/", httpOnly=True
        )
        for filename, (path, selector) in SHOTS.items():
            chrome.shoot(base + path.format(resolution_id=resolution_id), selector, out / filename)
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if chrome is not None:
            chrome.close()
        if server is not None:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()
        if args.keep_db:
            log(f"kept database {db} (config {work / 'odoo.conf'})")
        else:
            odoo_layer.drop_database(db)
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
