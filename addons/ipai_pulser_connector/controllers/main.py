"""The Pulser JSON API: ``/pulser/v1/intents``.

JSON only, signed (services/signing.py), every error an RFC 9457 problem document
(``ipai_ops.problem``). Business logic runs as the superuser after the HMAC
check succeeded (scheme v2 signs method, path, query, key id, timestamp, nonce and body
digest; v1 is accepted until ``ipai_pulser.signature_v1_until``): the API client is
authenticated by its key, not by an Odoo session. An authenticated request is then charged
to its client's rate limit (429 + ``Retry-After`` when spent), and a submission must be of
a type the client's scope allows (403 API.SCOPE_DENIED), both before anything is created.
"""

import functools
import json
import logging
import math
import re
import time
from datetime import datetime, timedelta, timezone

import psycopg2
from odoo import SUPERUSER_ID, fields, http
from odoo.exceptions import ConcurrencyError
from odoo.http import request
from odoo.service.model import PG_CONCURRENCY_EXCEPTIONS_TO_RETRY
from werkzeug.http import http_date

from ipai_ops.problem import PROBLEM_CONTENT_TYPE, problem

from ..services import signing
from ..services.exceptions import (
    ArgsInvalid,
    BodyTooLarge,
    DatabaseUnavailable,
    DeliveryDuplicate,
    IntentNotFound,
    PulserError,
    RateLimited,
    RequestInvalid,
    ScopeDenied,
)

_logger = logging.getLogger(__name__)

API_PREFIX = "/pulser/v1/intents"
MAX_BODY_BYTES = 1024 * 1024
#: Bytes read from the body at a time (a chunked body is counted as it arrives).
_READ_SLICE = 64 * 1024
#: Attribute of the Odoo request that keeps the body read once, for Odoo's retries.
_BODY_ATTR = "_ipai_pulser_body"
#: Attribute of the Odoo request: the last day a v1 signature it carried is accepted.
_SUNSET_ATTR = "_ipai_pulser_v1_until"
#: Attribute of the Odoo request: charged to its client's rate limit (Odoo's retries of the
#: same request after a serialization failure are not charged again).
_CHARGED_ATTR = "_ipai_pulser_rate_charged"
#: ``last_used_at`` is refreshed at most this often: a write per request would make every
#: concurrent request of one client contend for the client's row.
LAST_USED_RESOLUTION = timedelta(minutes=1)
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
_REF = re.compile(r"[0-9a-f]{32}")
_ID = re.compile(r"[0-9]{1,18}")
#: Path patterns and methods of the API, for the 404/405 answers of :meth:`fallback`.
_ENDPOINTS = (
    (re.compile(re.escape(API_PREFIX)), "POST"),
    (re.compile(re.escape(API_PREFIX) + r"/[^/]+"), "GET"),
    (re.compile(re.escape(API_PREFIX) + r"/[^/]+/cancel"), "POST"),
)
_CREATE_SCHEMA_KEYS = {
    "type",
    "args",
    "idempotency_key",
    "correlation_id",
    "work_item_ref",
    "priority",
    "max_attempts",
}
#: Content types Odoo's dispatcher parses from the body before a route runs.
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
#: ``ipai_pulser_api``: models/ir_http.py refuses form bodies of these routes before Odoo reads them.
_api_route = functools.partial(
    http.route, type="http", auth="none", csrf=False, readonly=False, save_session=False, ipai_pulser_api=True
)


def _reject_constant(name):
    # RFC 8259 section 6: NaN and Infinity are not JSON numbers (PostgreSQL's jsonb agrees).
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text):
    value = float(text)
    if not math.isfinite(value):
        _reject_constant(text)
    return value


def _contains_nul(payload):
    """True when a string anywhere in ``payload`` holds U+0000, which PostgreSQL cannot store.

    Iterative: a payload nested as deep as the JSON parser allows must not overflow the stack."""
    stack = [payload]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return True
        elif isinstance(value, dict):
            stack.extend(value)
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return False


def _wrong_content_type(content_type):
    return RequestInvalid(
        f"Content-Type must be application/json, got {content_type or 'none'}",
        details={"content_type": content_type},
    )


class PulserIntentController(http.Controller):
    # ------------------------------------------------------------------ plumbing

    def _env(self):
        return request.env(user=SUPERUSER_ID)

    def _registry(self):
        env = self._env()
        try:
            return env["ipai.pulser.intent"]._ops_registry()
        except Exception:
            _logger.exception("ipai_pulser: failure-mode registry unavailable")
            return None

    def _problem(self, exc, *, status=None):
        status = status or exc.http_status
        errors = exc.errors if isinstance(exc, ArgsInvalid) else None
        body = problem(
            self._registry(),
            exc.failure_code,
            detail=str(exc),
            instance=request.httprequest.path,
            correlation_id=request.httprequest.headers.get("X-Correlation-Id"),
            status=status,
            errors=errors,
        )
        headers = [("Content-Type", PROBLEM_CONTENT_TYPE)]
        if body["status"] == 503:
            headers.append(("Retry-After", "5"))
        if isinstance(exc, RateLimited):
            headers.append(("Retry-After", str(exc.retry_after)))
        if body["status"] == 413:
            # The rest of the body is left unread: the connection cannot carry another request.
            headers.append(("Connection", "close"))
        return request.make_json_response(body, headers=headers, status=body["status"])

    def _json(self, body, status=200):
        return request.make_json_response(body, status=status)

    def _authenticate(self, body):
        """The calling client, after signature, freshness and replay checks.

        Returns ``(client, signed, replayed)``: a replay is reported to the caller, which
        decides (an idempotent create returns the existing intent, anything else is 409).
        Replays are recognised by the v2 nonce (by the signature itself for v1).
        """
        env = self._env()
        httprequest = request.httprequest
        signed = signing.parse_headers(httprequest.headers)
        now_ts = time.time()
        if signed.scheme == signing.SCHEME_V1:
            v1_until = env["ipai.pulser.client"]._signature_v1_until()
            signing.check_scheme_accepted(signed, v1_until, now=now_ts)
            setattr(request, _SUNSET_ATTR, v1_until)
        client = env["ipai.pulser.client"]._find_by_key_id(signed.key_id)
        key = client._signing_key() if client else None
        signing.verify(
            signed,
            body,
            key,
            now=now_ts,
            method=httprequest.method,
            path=httprequest.path,
            query=list(httprequest.args.items(multi=True)),
        )
        if not getattr(request, _CHARGED_ATTR, False):
            # Authenticated, nothing of the body acted on yet: the client's budget decides.
            client._check_rate_limit()
            setattr(request, _CHARGED_ATTR, True)
        fresh = env["ipai.pulser.request.nonce"]._remember(signed.key_id, signed.replay_key, signed.timestamp)
        now = fields.Datetime.now()
        vals = {}
        if not client.last_used_at or now - client.last_used_at >= LAST_USED_RESOLUTION:
            vals["last_used_at"] = now
        if client.signature_scheme != signed.scheme:
            vals["signature_scheme"] = signed.scheme
        if vals:
            client.write(vals)
        return client, signed, not fresh

    def _read_body(self):
        """The raw body, at most :data:`MAX_BODY_BYTES`, read in slices: a declared length
        over the limit is refused before anything is read, a chunked body (no declared
        length) as soon as its bytes pass the limit. Either way the rest is never read, and
        413 closes the connection."""
        body = getattr(request, _BODY_ATTR, None)
        if body is not None:
            # Odoo runs the route again after a serialization failure: the stream is spent.
            return body
        declared = request.httprequest.content_length
        if declared is not None and declared > MAX_BODY_BYTES:
            raise BodyTooLarge(
                f"request body exceeds {MAX_BODY_BYTES} bytes (Content-Length: {declared})",
                details={"limit": MAX_BODY_BYTES, "declared": declared},
            )
        # Odoo's HTTPRequest proxies a fixed list of werkzeug attributes, without ``stream``
        # (werkzeug's get_data() would buffer a chunked body whole before we could count it).
        stream = getattr(request.httprequest, "_HTTPRequest__wrapped", request.httprequest).stream
        parts, size = [], 0
        try:
            while part := stream.read(min(_READ_SLICE, MAX_BODY_BYTES + 1 - size)):
                size += len(part)
                if size > MAX_BODY_BYTES:
                    raise BodyTooLarge(
                        f"request body exceeds {MAX_BODY_BYTES} bytes",
                        details={"limit": MAX_BODY_BYTES, "read": size},
                    )
                parts.append(part)
        except OSError as exc:  # werkzeug's dechunker: a malformed chunk header, a reset
            raise RequestInvalid(f"request body could not be read: {exc}") from None
        body = b"".join(parts)
        setattr(request, _BODY_ATTR, body)
        return body

    def _refuse_form_body(self):
        """The problem answering a form body, or None. Called by ``ir.http._pre_dispatch``,
        before Odoo reads the body: the answer closes the connection on the unread rest."""
        content_type = (request.httprequest.mimetype or "").lower()
        if content_type not in _FORM_TYPES:
            return None
        response = self._problem(_wrong_content_type(content_type))
        response.headers["Connection"] = "close"
        return response

    def _parse_json(self, body):
        content_type = (request.httprequest.mimetype or "").lower()
        if content_type != "application/json":
            raise _wrong_content_type(content_type)
        try:
            payload = json.loads(body.decode("utf-8"), parse_constant=_reject_constant, parse_float=_finite_float)
        except (UnicodeDecodeError, ValueError) as exc:
            raise RequestInvalid(f"request body is not valid JSON: {exc}") from None
        except RecursionError:
            raise RequestInvalid("request body is not valid JSON: nested too deeply") from None
        if not isinstance(payload, dict):
            raise RequestInvalid("request body must be a JSON object")
        if _contains_nul(payload):
            raise RequestInvalid("request body contains the character U+0000, which cannot be stored")
        return payload

    def _guard(self, work):
        """Run ``work()``; turn every failure into a problem document. Answers to requests
        signed with v1 carry a ``Sunset`` header (RFC 8594): the end of v1's window."""
        response = self._answer(work)
        v1_until = getattr(request, _SUNSET_ATTR, None)
        if v1_until:
            end = datetime.combine(v1_until + timedelta(days=1), datetime.min.time(), tzinfo=timezone.utc)
            response.headers["Sunset"] = http_date(end)
        return response

    def _answer(self, work):
        try:
            return work()
        except PulserError as exc:
            request.env.cr.rollback()
            return self._problem(exc)
        except (ConcurrencyError, *PG_CONCURRENCY_EXCEPTIONS_TO_RETRY):
            # A concurrent request won a row or a key: Odoo rolls back and runs the whole
            # request again (odoo.service.model.retrying), which then sees the winner.
            raise
        except psycopg2.OperationalError as exc:
            _logger.warning("ipai_pulser: database unavailable: %s", exc)
            err = DatabaseUnavailable("database unavailable, retry later")
            return self._problem(err, status=503)
        except Exception as exc:
            _logger.exception("ipai_pulser: unexpected API failure")
            request.env.cr.rollback()
            err = PulserError(f"unexpected server error: {type(exc).__name__}")
            return self._problem(err, status=500)

    def _find_intent(self, ref, client):
        Intent = self._env()["ipai.pulser.intent"]
        domain = [("source", "=", client.key_id)]
        if _REF.fullmatch(ref or ""):
            intent = Intent.search([("ref", "=", ref), *domain], limit=1)
        elif _ID.fullmatch(ref or ""):
            intent = Intent.search([("id", "=", int(ref)), *domain], limit=1)
        else:
            intent = Intent
        if not intent:
            raise IntentNotFound(f"no intent {ref!r} for this client", details={"ref": ref})
        return intent

    # ------------------------------------------------------------------ routes

    @_api_route(API_PREFIX, methods=["POST"])
    def create_intent(self, **_kw):
        def work():
            body = self._read_body()
            client, _signed, replayed = self._authenticate(body)
            payload = self._parse_json(body)
            unknown = sorted(set(payload) - _CREATE_SCHEMA_KEYS)
            problems = [{"path": f"$.{k}", "message": "unknown member"} for k in unknown]
            if not isinstance(payload.get("type"), str) or not payload.get("type"):
                problems.append({"path": "$.type", "message": "a non-empty string is required"})
            if "args" in payload and not isinstance(payload["args"], dict):
                problems.append({"path": "$.args", "message": "must be an object"})
            for key in ("idempotency_key", "correlation_id", "work_item_ref"):
                if payload.get(key) is not None and (
                    not isinstance(payload[key], str) or not 0 < len(payload[key]) <= 255
                ):
                    problems.append({"path": f"$.{key}", "message": "must be a string of 1..255 characters"})
            for key, low, high in (("priority", -100, 100), ("max_attempts", 1, 20)):
                value = payload.get(key)
                if value is not None and (
                    isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high
                ):
                    problems.append({"path": f"$.{key}", "message": f"must be an integer in {low}..{high}"})
            if problems:
                raise ArgsInvalid(problems, message="the intent request is invalid")
            if not client._allows_intent_type(payload["type"]):
                scope = client._scope()
                raise ScopeDenied(
                    f"client {client.key_id} may not submit intents of type {payload['type']!r}; "
                    f"its scope allows {', '.join(scope) if scope else 'no type (empty scope)'}",
                    details={"type": payload["type"], "allowed_intent_types": scope},
                )
            if replayed:
                existing = self._env()["ipai.pulser.intent"]
                if payload.get("idempotency_key"):
                    existing = existing.search(
                        [("source", "=", client.key_id), ("idempotency_key", "=", payload["idempotency_key"])],
                        limit=1,
                    )
                if existing:
                    return self._json(existing._api_dict(), status=200)
                raise DeliveryDuplicate("this signed request was already received (replay within the 5-minute window)")
            traceparent = (request.httprequest.headers.get("traceparent") or "").strip().lower()
            intent, created = self._env()["ipai.pulser.intent"]._submit(
                intent_type=payload["type"],
                args=payload.get("args", {}),
                source=client.key_id,
                client=client,
                idempotency_key=payload.get("idempotency_key"),
                correlation_id=payload.get("correlation_id") or request.httprequest.headers.get("X-Correlation-Id"),
                traceparent=traceparent if _TRACEPARENT.match(traceparent) else None,
                work_item_ref=payload.get("work_item_ref"),
                priority=payload.get("priority") or 0,
                max_attempts=payload.get("max_attempts"),
            )
            headers = [("Location", f"{API_PREFIX}/{intent.ref}")]
            return request.make_json_response(intent._api_dict(), headers=headers, status=201 if created else 200)

        return self._guard(work)

    @_api_route(f"{API_PREFIX}/<string:ref>", methods=["GET"])
    def get_intent(self, ref, **_kw):
        def work():
            client, _signed, _replayed = self._authenticate(self._read_body())
            # A GET changes nothing: a repeated signed GET within the window is harmless.
            return self._json(self._find_intent(ref, client)._api_dict())

        return self._guard(work)

    @_api_route(f"{API_PREFIX}/<string:ref>/cancel", methods=["POST"])
    def cancel_intent(self, ref, **_kw):
        def work():
            client, _signed, replayed = self._authenticate(self._read_body())
            if replayed:
                raise DeliveryDuplicate("this signed request was already received (replay within the 5-minute window)")
            intent = self._find_intent(ref, client)
            outcome = intent._request_cancel(source=f"api:{client.key_id}")
            return self._json(intent._api_dict(), status=200 if outcome == "cancelled" else 202)

        return self._guard(work)

    @_api_route("/pulser/v1/<path:_rest>")
    def fallback(self, _rest=None, **_kw):
        """Every other path or method under /pulser/v1: a problem document, not Odoo's HTML page.

        Werkzeug tries this rule only after the API's own rules refused the path or the method.
        """

        def work():
            path = request.httprequest.path
            allowed = [method for pattern, method in _ENDPOINTS if pattern.fullmatch(path)]
            if allowed:
                err = RequestInvalid(
                    f"method {request.httprequest.method} is not allowed here; use {', '.join(allowed)}",
                    details={"allowed_methods": allowed},
                )
                response = self._problem(err, status=405)
                response.headers["Allow"] = ", ".join(allowed)
                return response
            err = RequestInvalid(
                f"no endpoint {path}; the API is POST {API_PREFIX}, GET {API_PREFIX}/<ref>, "
                f"POST {API_PREFIX}/<ref>/cancel",
                details={"path": path},
            )
            return self._problem(err, status=404)

        return self._guard(work)
