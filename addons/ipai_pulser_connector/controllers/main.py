"""The Pulser JSON API: ``/pulser/v1/intents``.

JSON only, signed (services/signing.py), every error an RFC 9457 problem document
(services/problems.py). Business logic runs as the superuser after the HMAC
check succeeded: the API client is authenticated by its key, not by an Odoo session.
"""

import json
import logging
import re
import time

import psycopg2
from odoo import SUPERUSER_ID, fields, http
from odoo.http import request

from ..services import signing
from ..services.exceptions import (
    ArgsInvalid,
    DeliveryDuplicate,
    IntentNotFound,
    PulserError,
    RequestInvalid,
)
from ..services.problems import PROBLEM_CONTENT_TYPE, problem

_logger = logging.getLogger(__name__)

API_PREFIX = "/pulser/v1/intents"
MAX_BODY_BYTES = 1024 * 1024
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
_REF = re.compile(r"^[0-9a-f]{32}$")
_CREATE_SCHEMA_KEYS = {
    "type",
    "args",
    "idempotency_key",
    "correlation_id",
    "work_item_ref",
    "priority",
    "max_attempts",
}


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

    def _problem(self, exc, *, correlation_id=None, status=None):
        errors = exc.errors if isinstance(exc, ArgsInvalid) else None
        body = problem(
            self._registry(),
            exc.failure_code,
            detail=str(exc),
            instance=request.httprequest.path,
            correlation_id=correlation_id,
            status=status,
            errors=errors,
        )
        headers = [("Content-Type", PROBLEM_CONTENT_TYPE)]
        if body["status"] == 503:
            headers.append(("Retry-After", "5"))
        return request.make_json_response(body, headers=headers, status=body["status"])

    def _json(self, body, status=200):
        return request.make_json_response(body, status=status)

    def _authenticate(self, body):
        """The calling client, after signature, freshness and replay checks.

        Returns ``(client, signed, replayed)``: a replay is reported to the caller, which
        decides (an idempotent create returns the existing intent, anything else is 409).
        """
        env = self._env()
        signed = signing.parse_headers(request.httprequest.headers)
        client = env["ipai.pulser.client"]._find_by_key_id(signed.key_id)
        key = client._signing_key() if client else None
        signing.verify(signed, body, key, now=time.time())
        fresh = env["ipai.pulser.request.nonce"]._remember(signed.key_id, signed.signature, signed.timestamp)
        client.sudo().write({"last_used_at": fields.Datetime.now()})
        return client, signed, not fresh

    def _read_body(self):
        body = request.httprequest.get_data(cache=True)
        if len(body) > MAX_BODY_BYTES:
            raise RequestInvalid(f"request body exceeds {MAX_BODY_BYTES} bytes", details={"size": len(body)})
        return body

    def _parse_json(self, body):
        content_type = (request.httprequest.mimetype or "").lower()
        if content_type != "application/json":
            raise RequestInvalid(
                f"Content-Type must be application/json, got {content_type or 'none'}",
                details={"content_type": content_type},
            )
        try:
            payload = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise RequestInvalid(f"request body is not valid JSON: {exc}") from None
        if not isinstance(payload, dict):
            raise RequestInvalid("request body must be a JSON object")
        return payload

    def _guard(self, work):
        """Run ``work()``; turn every failure into a problem document."""
        correlation_id = request.httprequest.headers.get("X-Correlation-Id")
        try:
            return work()
        except PulserError as exc:
            request.env.cr.rollback()
            if isinstance(exc, DeliveryDuplicate):
                # The nonce row belongs to the first delivery; nothing to undo here.
                pass
            return self._problem(exc, correlation_id=correlation_id)
        except psycopg2.OperationalError as exc:
            _logger.warning("ipai_pulser: database unavailable: %s", exc)
            err = PulserError("database unavailable, retry later", failure_code="TRANSPORT.DATABASE_UNAVAILABLE")
            return self._problem(err, correlation_id=correlation_id, status=503)
        except Exception as exc:
            _logger.exception("ipai_pulser: unexpected API failure")
            request.env.cr.rollback()
            err = PulserError(f"unexpected server error: {type(exc).__name__}")
            return self._problem(err, correlation_id=correlation_id, status=500)

    def _find_intent(self, ref, client):
        Intent = self._env()["ipai.pulser.intent"]
        domain = [("source", "=", client.key_id)]
        if _REF.match(ref or ""):
            intent = Intent.search([("ref", "=", ref), *domain], limit=1)
        elif (ref or "").isdigit():
            intent = Intent.search([("id", "=", int(ref)), *domain], limit=1)
        else:
            intent = Intent
        if not intent:
            raise IntentNotFound(f"no intent {ref!r} for this client", details={"ref": ref})
        return intent

    # ------------------------------------------------------------------ routes

    @http.route(API_PREFIX, type="http", auth="none", methods=["POST"], csrf=False, readonly=False, save_session=False)
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

    @http.route(
        f"{API_PREFIX}/<string:ref>",
        type="http",
        auth="none",
        methods=["GET"],
        csrf=False,
        readonly=False,
        save_session=False,
    )
    def get_intent(self, ref, **_kw):
        def work():
            client, _signed, _replayed = self._authenticate(self._read_body())
            # A GET changes nothing: a repeated signed GET within the window is harmless.
            return self._json(self._find_intent(ref, client)._api_dict())

        return self._guard(work)

    @http.route(
        f"{API_PREFIX}/<string:ref>/cancel",
        type="http",
        auth="none",
        methods=["POST"],
        csrf=False,
        readonly=False,
        save_session=False,
    )
    def cancel_intent(self, ref, **_kw):
        def work():
            client, _signed, replayed = self._authenticate(self._read_body())
            if replayed:
                raise DeliveryDuplicate("this signed request was already received (replay within the 5-minute window)")
            intent = self._find_intent(ref, client)
            outcome = intent._request_cancel(source=f"api:{client.key_id}")
            return self._json(intent._api_dict(), status=200 if outcome == "cancelled" else 202)

        return self._guard(work)
