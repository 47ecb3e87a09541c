"""Demo fixtures: a real ``ipai-ops bridge serve`` on a throwaway ops database, and a
stand-in for Odoo's Pulser API that verifies signatures with the addon's own code."""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from urllib.parse import parse_qsl, unquote, urlsplit

import psycopg2
import pytest

from tests.bridge.conftest import REPO, BridgeProcess


def start_bridge(dsn: str, **flags: object) -> BridgeProcess:
    """The bridge's own test harness, HTTP only (the demo exports OTLP/HTTP)."""
    return BridgeProcess(dsn, grpc_port=0, **flags).start()


@pytest.fixture(autouse=True)
def run_artifacts(tmp_path, monkeypatch) -> Path:
    """The demo's recorded runs keep their directories here, not in the user's state dir."""
    folder = tmp_path / "runs"
    monkeypatch.setenv("IPAI_OPS_RUN_ARTIFACTS", str(folder))
    return folder


@pytest.fixture(scope="module")
def bridge(module_ops_dsn: str) -> Iterator[BridgeProcess]:
    proc = start_bridge(module_ops_dsn)
    try:
        yield proc
    finally:
        proc.stop()


def load_addon_signing() -> ModuleType:
    """addons/ipai_pulser_connector/services/signing.py without Odoo (that folder imports none)."""
    services = REPO / "addons" / "ipai_pulser_connector" / "services"
    pkg_spec = importlib.util.spec_from_file_location(
        "_pulser_services", services / "__init__.py", submodule_search_locations=[str(services)]
    )
    pkg = importlib.util.module_from_spec(pkg_spec)
    sys.modules["_pulser_services"] = pkg
    pkg_spec.loader.exec_module(pkg)
    return importlib.import_module("_pulser_services.signing")


class FakeOdoo:
    """Just enough of Odoo for the demo: /web/login, /jsonrpc and /pulser/v1/intents.

    Signatures are checked with the addon's own ``signing.verify``; intents validate like
    the built-in handlers do at submit time and fail in the "worker" like they do there.
    """

    HANDLERS = ("odoo.healthcheck", "odoo.modules.status", "odoo.config.snapshot")

    def __init__(self) -> None:
        self.signing = load_addon_signing()
        self.key_id = "pk_demo0000000000"
        self.key = "k" * 64
        self.intents: dict[str, dict] = {}
        self.rpc_calls: list[tuple[str, str]] = []
        self.worker_runs = 0
        self.seen: set[str] = set()
        #: ops database the error groups are read from (Odoo reads ops.agent_errors in place).
        self.ops_dsn: str | None = None
        self.resolutions: dict[int, dict] = {}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args):  # quiet
                pass

            def _send(self, status: int, doc: dict, ctype: str = "application/json") -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path == "/web/login":
                    return self._send(200, {})
                if self.path.startswith("/pulser/v1/intents/"):
                    problem = fake.authenticate(self.headers, b"", "GET", self.path)
                    if problem:
                        return self._send(*problem)
                    return self._send(200, fake.intents[self.path.rsplit("/", 1)[1]])
                return self._send(404, {})

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path == "/jsonrpc":
                    return self._send(200, {"jsonrpc": "2.0", "id": 1, "result": fake.rpc(json.loads(body))})
                if self.path == "/pulser/v1/intents":
                    return self._send(*fake.create(self.headers, body, "POST", self.path))
                return self._send(404, {})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def problem(self, status: int, code: str) -> tuple[int, dict, str]:
        return (
            status,
            {"type": f"urn:ipai:failure:{code}", "status": status, "ipai": {"code": code}},
            ("application/problem+json"),
        )

    def authenticate(self, headers, body: bytes, method: str, target: str):
        """As the addon's controller does, with v1 past its window (the demo signs v2)."""
        url = urlsplit(target)
        try:
            signed = self.signing.parse_headers(headers)
            self.signing.check_scheme_accepted(signed, None, now=time.time())
            key = self.key if signed.key_id == self.key_id else None
            self.signing.verify(
                signed,
                body,
                key,
                now=time.time(),
                method=method,
                path=unquote(url.path),
                query=parse_qsl(url.query, keep_blank_values=True),
            )
        except Exception as exc:
            return self.problem(401, exc.failure_code)
        if signed.replay_key in self.seen:
            return self.problem(409, "WEBHOOK.DELIVERY_DUPLICATE")
        self.seen.add(signed.replay_key)
        return None

    def create(self, headers, body: bytes, method: str, target: str):
        problem = self.authenticate(headers, body, method, target)
        if problem:
            return problem
        payload = json.loads(body)
        if payload["type"] not in self.HANDLERS:
            return self.problem(422, "INTENT.TYPE_UNKNOWN")
        if not all(isinstance(v, str) for v in payload.get("args", {}).values()):
            return self.problem(422, "INTENT.ARGS_INVALID")
        ref = f"{len(self.intents) + 1:032x}"
        self.intents[ref] = {"ref": ref, "type": payload["type"], "args": payload["args"], "state": "queued"}
        return 201, self.intents[ref], "application/json"

    def run_worker(self) -> None:
        self.worker_runs += 1
        for intent in self.intents.values():
            args = intent["args"]
            if args.get("profile", "default") not in ("default", "minimal"):
                intent.update(state="failed", failure_code="INTENT.ALLOWLIST_PROFILE_UNKNOWN")
            elif args.get("redaction_mode", "strict") not in ("strict", "names_only"):
                intent.update(state="failed", failure_code="INTENT.REDACTION_MODE_UNSUPPORTED")
            else:
                intent.update(state="succeeded")

    def rpc(self, request: dict):
        params = request["params"]
        if params["service"] == "common":
            return 2 if params["args"][1:] == ["admin", "admin"] else False
        _db, _uid, _pw, model, method, _args, _kw = params["args"]
        self.rpc_calls.append((model, method))
        if (model, method) == ("ipai.pulser.client", "search"):
            return []
        if (model, method) == ("ipai.pulser.client", "create"):
            return [7]
        if (model, method) == ("ipai.pulser.client", "action_show_new_key"):
            return {"type": "ir.actions.client", "params": {"message": self.key}}
        if (model, method) == ("ipai.pulser.client", "read"):
            return [{"id": 7, "key_id": self.key_id}]
        if (model, method) == ("ir.model.data", "search_read"):
            return [{"id": 1, "res_id": 3}]
        if (model, method) == ("ir.cron", "method_direct_trigger"):
            self.run_worker()
            return True
        if (model, method) == ("ipai.agent.error", "search_read"):
            return self.error_groups({field: value for field, _op, value in _args[0]})
        if (model, method) == ("ipai.resolution", "search"):
            wanted = {field: value for field, _op, value in _args[0]}
            return [i for i, r in self.resolutions.items() if all(r.get(k) == v for k, v in wanted.items())]
        if (model, method) == ("ipai.resolution", "create"):
            new_id = len(self.resolutions) + 1
            self.resolutions[new_id] = {**_args[0][0], "stage": "draft"}
            return [new_id]
        if (model, method) == ("ipai.resolution", "action_submit_review"):
            for rid in _args[0]:
                self.resolutions[rid]["stage"] = "review"
            return True
        raise AssertionError(f"unexpected RPC {model}.{method}")

    def error_groups(self, where: dict) -> list[dict]:
        """ipai.agent.error's search_read by code and service, from the real ops database."""
        if self.ops_dsn is None:
            return []
        conn = psycopg2.connect(self.ops_dsn)
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT id, fingerprint FROM ops.agent_errors WHERE code = %s AND service = %s"
                    " ORDER BY last_seen DESC LIMIT 1",
                    (where["code"], where["service"]),
                )
                return [{"id": i, "fingerprint": fp} for i, fp in cur.fetchall()]
        finally:
            conn.close()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_odoo() -> Iterator[FakeOdoo]:
    odoo = FakeOdoo()
    try:
        yield odoo
    finally:
        odoo.close()
