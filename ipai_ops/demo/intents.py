"""The demo's intents: signed requests to Odoo's Pulser API, some of which fail.

Signing mirrors scheme v2 of ``addons/ipai_pulser_connector/services/signing.py`` (the
addon cannot be imported without Odoo): ``X-Pulser-Signature: v2=<hex HMAC-SHA256>`` with the
client's signing key over the canonical string of the request (method, path, query, key id,
timestamp, nonce, body digest), each request with a new ``X-Pulser-Nonce``.

Credentials: an existing client's key id and signing key, or else an Odoo login that may
manage Pulser clients: the demo then creates (or re-keys) a client named ``demo-agent``
through Odoo's standard RPC endpoint, the way the backend's "show new key" button does.
With that login it also runs the intent worker's cron at once instead of waiting a minute.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import requests

from ipai_ops.text import first_line

HEADER_KEY_ID = "X-Pulser-Key-Id"
HEADER_TIMESTAMP = "X-Pulser-Timestamp"
HEADER_SIGNATURE = "X-Pulser-Signature"
HEADER_NONCE = "X-Pulser-Nonce"
V2_ALGORITHM = "PULSER-HMAC-SHA256-V2"
API_PATH = "/pulser/v1/intents"
CLIENT_NAME = "demo-agent"
WORKER_CRON_XMLID = ("ipai_pulser_connector", "ir_cron_ipai_pulser_connector_run_worker")
TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled", "dead"})


class OdooUnavailable(Exception):
    """Odoo (or its Pulser API) is not there: the intents part is skipped with a note."""


def canonical_request(*, method: str, target: str, key_id: str, timestamp: int, nonce: str, body: bytes) -> str:
    """The v2 canonical string of a request to ``target`` (path and query as sent)."""
    url = urlsplit(target)
    pairs = sorted((quote(k, safe=""), quote(v, safe="")) for k, v in parse_qsl(url.query, keep_blank_values=True))
    return "\n".join(
        (
            V2_ALGORITHM,
            method.upper(),
            quote(unquote(url.path), safe="/"),
            "&".join(f"{k}={v}" for k, v in pairs),
            key_id,
            str(timestamp),
            nonce,
            hashlib.sha256(body).hexdigest(),
        )
    )


def sign(signing_key: str, canonical: str) -> str:
    return hmac.new(signing_key.encode(), canonical.encode(), hashlib.sha256).hexdigest()


def signed_headers(
    key_id: str, signing_key: str, *, method: str, target: str, body: bytes, timestamp: int
) -> dict[str, str]:
    """The v2 auth headers of one request, with a new nonce."""
    nonce = secrets.token_urlsafe(16)
    canonical = canonical_request(
        method=method, target=target, key_id=key_id, timestamp=timestamp, nonce=nonce, body=body
    )
    return {
        HEADER_KEY_ID: key_id,
        HEADER_TIMESTAMP: str(timestamp),
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: "v2=" + sign(signing_key, canonical),
    }


@dataclass(frozen=True)
class IntentCase:
    """One request; ``expect`` is ``succeeded`` or the failure code the demo expects."""

    name: str
    payload: dict[str, Any]
    expect: str
    tamper: str | None = None  # None | "signature" | "stale"


def cases(run_id: str) -> tuple[IntentCase, ...]:
    def key(name: str) -> str:
        return f"demo-{run_id}-{name}"

    return (
        IntentCase(
            "healthcheck",
            {"type": "odoo.healthcheck", "args": {"echo": "demo"}, "idempotency_key": key("health")},
            "succeeded",
        ),
        IntentCase(
            "module status",
            {"type": "odoo.modules.status", "args": {"profile": "default"}, "idempotency_key": key("modules")},
            "succeeded",
        ),
        IntentCase(
            "config snapshot",
            {"type": "odoo.config.snapshot", "args": {}, "idempotency_key": key("config")},
            "succeeded",
        ),
        IntentCase(
            "unknown intent type",
            {"type": "demo.reticulate_splines", "args": {}, "idempotency_key": key("unknown-type")},
            "INTENT.TYPE_UNKNOWN",
        ),
        IntentCase(
            "invalid args",
            {"type": "odoo.healthcheck", "args": {"echo": 42}, "idempotency_key": key("bad-args")},
            "INTENT.ARGS_INVALID",
        ),
        IntentCase(
            "unknown allowlist profile",
            {
                "type": "odoo.modules.status",
                "args": {"profile": "no-such-profile"},
                "idempotency_key": key("bad-profile"),
            },
            "INTENT.ALLOWLIST_PROFILE_UNKNOWN",
        ),
        IntentCase(
            "unsupported redaction mode",
            {
                "type": "odoo.config.snapshot",
                "args": {"redaction_mode": "everything"},
                "idempotency_key": key("bad-redaction"),
            },
            "INTENT.REDACTION_MODE_UNSUPPORTED",
        ),
        IntentCase(
            "forged signature",
            {"type": "odoo.healthcheck", "args": {}, "idempotency_key": key("forged")},
            "WEBHOOK.SIGNATURE_INVALID",
            tamper="signature",
        ),
        IntentCase(
            "stale timestamp",
            {"type": "odoo.healthcheck", "args": {}, "idempotency_key": key("stale")},
            "WEBHOOK.TIMESTAMP_STALE",
            tamper="stale",
        ),
    )


@dataclass
class IntentOutcome:
    case: IntentCase
    http_status: int
    ref: str | None = None
    state: str | None = None
    code: str | None = None

    @property
    def result(self) -> str:
        """``succeeded``, a failure code, or a non-terminal state."""
        if self.code:
            return self.code
        return self.state or f"HTTP {self.http_status}"

    @property
    def as_expected(self) -> bool:
        return self.result == self.case.expect


@dataclass
class IntentsReport:
    client_note: str = ""
    outcomes: list[IntentOutcome] = field(default_factory=list)
    worker_note: str = ""

    @property
    def all_as_expected(self) -> bool:
        return bool(self.outcomes) and all(o.as_expected for o in self.outcomes)


class OdooRpc:
    """The few calls the demo makes through Odoo's standard ``/jsonrpc`` endpoint."""

    def __init__(self, url: str, db: str, login: str, password: str, *, timeout: float = 60):
        self.url = url.rstrip("/") + "/jsonrpc"
        self.db = db
        self.password = password
        self.timeout = timeout
        self.uid = self._call("common", "login", db, login, password)
        if not self.uid:
            raise PermissionError(f"Odoo refused the login {login!r} on database {db!r}")

    def _call(self, service: str, method: str, *args: Any) -> Any:
        body = {
            "jsonrpc": "2.0",
            "method": "call",
            "id": 1,
            "params": {"service": service, "method": method, "args": args},
        }
        resp = requests.post(self.url, json=body, timeout=self.timeout)
        resp.raise_for_status()
        answer = resp.json()
        if answer.get("error"):
            data = answer["error"].get("data") or {}
            raise PermissionError(data.get("message") or answer["error"].get("message") or "Odoo RPC error")
        return answer.get("result")

    def execute(self, model: str, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._call("object", "execute_kw", self.db, self.uid, self.password, model, method, list(args), kwargs)


def provision_client(rpc: OdooRpc) -> tuple[str, str, str]:
    """Create or re-key the ``demo-agent`` client; returns ``(key_id, signing_key, note)``."""
    found = rpc.execute("ipai.pulser.client", "search", [("name", "=", CLIENT_NAME)], limit=1)
    if found:
        client_id, verb = found[0], "re-keyed"
    else:
        # Scope "*": the demo submits an unregistered type on purpose (INTENT.TYPE_UNKNOWN),
        # which a narrower scope would refuse first (API.SCOPE_DENIED).
        client_id = rpc.execute(
            "ipai.pulser.client",
            "create",
            [{"name": CLIENT_NAME, "note": "created by `ipai-ops demo`", "allowed_intent_types": "*"}],
        )[0]
        verb = "created"
    # The backend's "show new key" button: a new salt, the key returned once and never stored.
    action = rpc.execute("ipai.pulser.client", "action_show_new_key", [client_id])
    key = (action or {}).get("params", {}).get("message")
    key_id = rpc.execute("ipai.pulser.client", "read", [client_id], ["key_id"])[0]["key_id"]
    if not key:
        raise PermissionError("Odoo did not return the client's new key")
    return key_id, key, f"{verb} Pulser client {CLIENT_NAME!r} ({key_id})"


def run_worker(rpc: OdooRpc) -> str:
    module, name = WORKER_CRON_XMLID
    rows = rpc.execute("ir.model.data", "search_read", [("module", "=", module), ("name", "=", name)], ["res_id"])
    if not rows:
        return "the intent worker cron was not found; the intents stay queued until it exists"
    rpc.execute("ir.cron", "method_direct_trigger", [rows[0]["res_id"]])
    return "ran the intent worker cron"


class PulserClient:
    def __init__(self, url: str, key_id: str, signing_key: str, *, timeout: float = 30):
        self.root = url.rstrip("/")
        self.key_id = key_id
        self.signing_key = signing_key
        self.timeout = timeout

    def _headers(self, method: str, target: str, body: bytes, *, tamper: str | None = None) -> dict[str, str]:
        ts = int(time.time()) - (3600 if tamper == "stale" else 0)
        key = "not-the-key" if tamper == "signature" else self.signing_key
        return signed_headers(self.key_id, key, method=method, target=target, body=body, timestamp=ts)

    def submit(self, case: IntentCase) -> IntentOutcome:
        body = json.dumps(case.payload, separators=(",", ":")).encode()
        headers = {**self._headers("POST", API_PATH, body, tamper=case.tamper), "Content-Type": "application/json"}
        resp = requests.post(self.root + API_PATH, data=body, headers=headers, timeout=self.timeout)
        return self._outcome(case, resp)

    def get(self, outcome: IntentOutcome) -> IntentOutcome:
        target = f"{API_PATH}/{outcome.ref}"
        resp = requests.get(self.root + target, headers=self._headers("GET", target, b""), timeout=self.timeout)
        return self._outcome(outcome.case, resp, ref=outcome.ref)

    @staticmethod
    def _outcome(case: IntentCase, resp: requests.Response, ref: str | None = None) -> IntentOutcome:
        try:
            doc = resp.json()
        except ValueError:
            doc = {}
        if resp.status_code == 404 and not isinstance(doc.get("ipai"), dict):
            raise OdooUnavailable("Odoo answered 404 for the Pulser API: is ipai_pulser_connector installed?")
        if resp.status_code >= 400:
            code = (doc.get("ipai") or {}).get("code") or f"HTTP {resp.status_code}"
            return IntentOutcome(case, resp.status_code, ref=ref, code=code)
        state = doc.get("state")
        code = doc.get("failure_code") if state in ("failed", "dead") else None
        return IntentOutcome(case, resp.status_code, ref=doc.get("ref") or ref, state=state, code=code)


def reason(exc: requests.RequestException) -> str:
    """A short, human reason for a failed request (requests' own messages run to a paragraph)."""
    if isinstance(exc, requests.ConnectTimeout | requests.ReadTimeout):
        return "timed out"
    if isinstance(exc, requests.ConnectionError):
        return "connection refused or host unreachable"
    return first_line(exc)[:200]


def reachable(url: str, *, timeout: float = 5) -> str | None:
    """None when Odoo answers, else why not (one line)."""
    try:
        requests.get(url.rstrip("/") + "/web/login", timeout=timeout, allow_redirects=False)
    except requests.RequestException as exc:
        return reason(exc)
    return None


def run_intents(
    *,
    url: str,
    key_id: str | None,
    secret: str | None,
    db: str,
    login: str,
    password: str,
    wait: float = 60,
    progress: Callable[[IntentOutcome], None] | None = None,
    notify: Callable[[str], None] | None = None,
) -> IntentsReport:
    """Submit every case, run the worker when allowed, poll accepted intents to a terminal state.

    Raises :class:`OdooUnavailable` (the caller prints a note and moves on) when Odoo or
    the Pulser API is not there, or no credentials can be had.
    """
    why = reachable(url)
    if why:
        raise OdooUnavailable(
            f"Odoo is not reachable at {url} ({why}); start it with ./scripts/run.sh or pass --odoo-url"
        )
    report = IntentsReport()
    rpc: OdooRpc | None = None
    if login and password:
        try:
            rpc = OdooRpc(url, db, login, password)
        except (PermissionError, requests.RequestException, ValueError) as exc:
            if not (key_id and secret):
                raise OdooUnavailable(
                    f"no Pulser credentials: pass --key-id/--secret, or an Odoo login that may manage clients ({exc})"
                ) from None
    if key_id and secret:
        report.client_note = f"using Pulser client {key_id}"
    elif rpc is not None:
        try:
            key_id, secret, report.client_note = provision_client(rpc)
        except (PermissionError, requests.RequestException, ValueError) as exc:
            raise OdooUnavailable(f"could not create the demo's Pulser client through Odoo: {exc}") from None
    else:
        raise OdooUnavailable("no Pulser credentials: pass --key-id/--secret (or --odoo-login/--odoo-password)")
    if notify:
        notify(report.client_note)
    client = PulserClient(url, key_id, secret)
    run_id = uuid.uuid4().hex[:8]
    for case in cases(run_id):
        outcome = client.submit(case)
        report.outcomes.append(outcome)
        if progress:
            progress(outcome)
    pending = [o for o in report.outcomes if o.ref and o.state not in TERMINAL_STATES]
    if pending and rpc is not None:
        try:
            report.worker_note = run_worker(rpc)
        except (PermissionError, requests.RequestException, ValueError) as exc:
            report.worker_note = f"could not run the worker now ({exc}); its cron runs every minute"
    elif pending:
        report.worker_note = "waiting for the intent worker cron (it runs every minute)"
    if notify and report.worker_note:
        notify(report.worker_note)
    deadline = time.monotonic() + wait
    while pending:
        for i, outcome in enumerate(report.outcomes):
            if outcome in pending:
                report.outcomes[i] = client.get(outcome)
        pending = [o for o in report.outcomes if o.ref and o.state not in TERMINAL_STATES]
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(1)
    return report
