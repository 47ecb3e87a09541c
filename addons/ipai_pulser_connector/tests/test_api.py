import contextlib
import json
import select
import socket
import time
from datetime import timedelta
from urllib.parse import urlsplit

from odoo import fields
from odoo.tests import HttpCase, tagged

from ipai_ops.problem import PROBLEM_CONTENT_TYPE, problem_errors

from ..services import signing
from .common import register_test_handlers, unregister_test_handlers

API = "/pulser/v1/intents"
MAX_BODY = 1024 * 1024


@tagged("post_install", "-at_install")
class TestApi(HttpCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        register_test_handlers()
        cls.client, cls.key = cls.env["ipai.pulser.client"]._create_with_key("test agent", allowed_intent_types="*")

    @classmethod
    def tearDownClass(cls):
        unregister_test_handlers()
        super().tearDownClass()

    # -------------------------------------------------------------- helpers

    def call(
        self,
        path,
        payload=None,
        *,
        method=None,
        key=None,
        key_id=None,
        timestamp=None,
        raw=None,
        content_type="application/json",
        headers=None,
        nonce=None,
        scheme="v2",
    ):
        """A request signed with ``scheme`` (v2: a new nonce unless ``nonce`` is given)."""
        body = raw if raw is not None else (json.dumps(payload).encode() if payload is not None else b"")
        ts = int(time.time()) if timestamp is None else timestamp
        method = method or ("POST" if payload is not None or raw is not None else "GET")
        if scheme == "v1":
            all_headers = signing.signed_headers_v1(key_id or self.client.key_id, key or self.key, body, ts)
        else:
            target = urlsplit(path)
            all_headers = signing.signed_headers(
                key_id or self.client.key_id,
                key or self.key,
                method=method,
                path=target.path,
                query=target.query,
                body=body,
                timestamp=ts,
                nonce=nonce,
            )
        all_headers["Content-Type"] = content_type
        all_headers.update(headers or {})
        return self.url_open(path, data=body, headers=all_headers, method=method)

    def assertProblem(self, response, status, code):
        self.assertEqual(response.status_code, status, response.text)
        self.assertEqual(response.headers["Content-Type"].split(";")[0], PROBLEM_CONTENT_TYPE)
        body = response.json()
        self.assertEqual(problem_errors(body), [])
        self.assertEqual(body["type"], f"urn:ipai:failure:{code}")
        self.assertEqual(body["ipai"]["code"], code)
        self.assertEqual(body["status"], status)
        return body

    def chunked_head(self, url, content_type="application/json"):
        """The request line and headers of a signed chunked POST to the API, as bytes. Call it
        inside ``allow_requests()``: the test server serves only requests with its cookie."""
        head = {
            **signing.signed_headers(
                self.client.key_id, self.key, method="POST", path=API, body=b"", timestamp=int(time.time())
            ),
            "Host": url.netloc,
            "Content-Type": content_type,
            "Transfer-Encoding": "chunked",
            "Cookie": "; ".join(f"{name}={value}" for name, value in self.opener.cookies.items()),
        }
        return (f"POST {API} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in head.items()) + "\r\n").encode()

    def send_chunked(self, url, head, chunk, total):
        """POST ``total`` bytes as chunks of ``chunk`` on a raw socket, stopping as soon as the
        server answers. Returns ``(bytes sent, raw answer)``."""
        sent, answer = 0, b""
        with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
            sock.sendall(head)
            # The server may answer and close while we still send (a broken pipe) or before we
            # read its answer (a reset after it): what it sent before is read all the same.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                while sent < total and not select.select([sock], [], [], 0)[0]:
                    sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    sent += len(chunk)
                if sent >= total:
                    sock.sendall(b"0\r\n\r\n")
            with contextlib.suppress(ConnectionResetError):
                while part := sock.recv(65536):
                    answer += part
        return sent, answer

    # -------------------------------------------------------------- happy path

    def test_create_get_cancel(self):
        traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        response = self.call(
            API,
            {"type": "odoo.healthcheck", "args": {"echo": "hi"}, "work_item_ref": "WI-7"},
            headers={"traceparent": traceparent},
        )
        self.assertEqual(response.status_code, 201, response.text)
        created = response.json()
        self.assertEqual(created["state"], "queued")
        self.assertEqual(created["traceparent"], traceparent)
        self.assertEqual(created["source"], self.client.key_id)
        self.assertEqual(response.headers["Location"], f"{API}/{created['ref']}")
        got = self.call(f"{API}/{created['ref']}").json()
        self.assertEqual(got["id"], created["id"])
        self.assertEqual([e["type"] for e in got["events"]], ["created"])
        response = self.call(f"{API}/{created['ref']}/cancel", {})
        self.assertEqual(response.status_code, 200, response.text)
        self.assertEqual(response.json()["state"], "cancelled")
        again = self.call(f"{API}/{created['ref']}/cancel", {"again": 1})
        self.assertProblem(again, 409, "INTENT.STATE_CONFLICT")

    def test_result_visible_after_worker(self):
        created = self.call(API, {"type": "test.crash"}).json()
        self.env["ipai.pulser.intent"]._run_worker(worker_id="odoo:test:http:1")
        got = self.call(f"{API}/{created['ref']}").json()
        self.assertEqual(got["state"], "failed")
        self.assertEqual(got["failure_envelope"]["error"]["code"], "INTENT.HANDLER_CRASHED")
        self.assertFalse(got["result"]["ok"])
        self.assertIn("attempt_failed", [e["type"] for e in got["events"]])

    def test_idempotent_create(self):
        payload = {"type": "odoo.healthcheck", "idempotency_key": "idem-1"}
        first = self.call(API, payload)
        self.assertEqual(first.status_code, 201)
        # a new request (new timestamp -> new signature) with the same key
        second = self.call(API, payload, timestamp=int(time.time()) - 1)
        self.assertEqual(second.status_code, 200)
        self.assertEqual(second.json()["id"], first.json()["id"])
        # the very same signed request replayed: still the existing intent, not a 409
        ts, nonce = int(time.time()) - 2, signing.new_nonce()
        self.assertEqual(self.call(API, payload, timestamp=ts, nonce=nonce).status_code, 200)
        replay = self.call(API, payload, timestamp=ts, nonce=nonce)
        self.assertEqual(replay.status_code, 200)
        self.assertEqual(replay.json()["id"], first.json()["id"])
        self.assertEqual(self.env["ipai.pulser.intent"].search_count([("idempotency_key", "=", "idem-1")]), 1)

    # -------------------------------------------------------------- auth

    def test_replay_without_idempotency_key_is_409(self):
        ts, nonce = int(time.time()), signing.new_nonce()
        payload = {"type": "odoo.healthcheck"}
        self.assertEqual(self.call(API, payload, timestamp=ts, nonce=nonce).status_code, 201)
        self.assertProblem(self.call(API, payload, timestamp=ts, nonce=nonce), 409, "WEBHOOK.DELIVERY_DUPLICATE")

    # -------------------------------------------------------------- signature v2

    def test_a_signature_authorises_only_its_own_request(self):
        """v1 signed "<timestamp>.<body>": the signature of an empty-body GET of one intent
        also authorised a cancel of another. v2 signs method, path and query too."""
        mine = self.call(API, {"type": "odoo.healthcheck"}).json()
        other = self.call(API, {"type": "odoo.healthcheck"}).json()
        ts = int(time.time())
        get_headers = signing.signed_headers(
            self.client.key_id, self.key, method="GET", path=f"{API}/{mine['ref']}", timestamp=ts
        )
        self.assertEqual(self.url_open(f"{API}/{mine['ref']}", headers=get_headers).status_code, 200)
        reused = {
            "a cancel of another intent": ("POST", f"{API}/{other['ref']}/cancel"),
            "a cancel of the same intent": ("POST", f"{API}/{mine['ref']}/cancel"),
            "a GET of another intent": ("GET", f"{API}/{other['ref']}"),
            "the same GET with a query": ("GET", f"{API}/{mine['ref']}?with=query"),
        }
        for name, (method, path) in reused.items():
            with self.subTest(name):
                response = self.url_open(path, data=b"", headers=get_headers, method=method)
                self.assertProblem(response, 401, "WEBHOOK.SIGNATURE_INVALID")
        states = self.env["ipai.pulser.intent"].search([("ref", "in", [mine["ref"], other["ref"]])]).mapped("state")
        self.assertEqual(states, ["queued", "queued"])

    def test_two_empty_body_requests_in_one_second_do_not_collide(self):
        """Under v1 both cancels signed the same "<ts>." and the second was a 409 replay."""
        refs = [self.call(API, {"type": "odoo.healthcheck"}).json()["ref"] for _ in range(2)]
        ts = int(time.time())
        for ref in refs:
            response = self.call(f"{API}/{ref}/cancel", raw=b"", timestamp=ts)
            self.assertEqual(response.status_code, 200, response.text)
            self.assertEqual(response.json()["state"], "cancelled")

    def test_replay_is_keyed_on_the_nonce(self):
        ref = self.call(API, {"type": "odoo.healthcheck"}).json()["ref"]
        nonce = signing.new_nonce()
        ts = int(time.time())
        self.assertEqual(self.call(f"{API}/{ref}/cancel", raw=b"", timestamp=ts, nonce=nonce).status_code, 200)
        for name, when in (("the same request", ts), ("a new signature, the same nonce", ts - 1)):
            with self.subTest(name):
                response = self.call(f"{API}/{ref}/cancel", raw=b"", timestamp=when, nonce=nonce)
                self.assertProblem(response, 409, "WEBHOOK.DELIVERY_DUPLICATE")

    def test_v2_nonce_is_required_and_shaped(self):
        headers = signing.signed_headers(
            self.client.key_id, self.key, method="GET", path=f"{API}/{'f' * 32}", timestamp=int(time.time())
        )
        nonce = headers.pop(signing.HEADER_NONCE)
        body = self.assertProblem(self.url_open(f"{API}/{'f' * 32}", headers=headers), 401, "API.AUTH_MISSING")
        self.assertIn(signing.HEADER_NONCE, body["detail"])
        for bad in ("short", "x" * 65, nonce[:15] + "!"):
            with self.subTest(nonce=bad):
                headers[signing.HEADER_NONCE] = bad
                response = self.url_open(f"{API}/{'f' * 32}", headers=headers)
                self.assertProblem(response, 401, "WEBHOOK.SIGNATURE_INVALID")

    # -------------------------------------------------------------- signature v1 (deprecated)

    def set_v1_until(self, value):
        self.env["ir.config_parameter"].sudo().set_param(signing.V1_UNTIL_PARAM, value)

    def test_v1_is_accepted_within_its_window_with_a_sunset_header(self):
        self.set_v1_until("2999-12-31")
        response = self.call(API, {"type": "odoo.healthcheck"}, scheme="v1")
        self.assertEqual(response.status_code, 201, response.text)
        self.assertEqual(response.headers["Sunset"], "Wed, 01 Jan 3000 00:00:00 GMT")
        self.assertEqual(self.client.signature_scheme, "v1")
        response = self.call(API, {"type": "odoo.healthcheck"})
        self.assertNotIn("Sunset", response.headers)
        self.assertEqual(self.client.signature_scheme, "v2")

    def test_v1_is_refused_after_its_window(self):
        for setting, says in (("2026-01-01", "accepted until 2026-01-01"), ("soon", "setting not a date")):
            with self.subTest(setting=setting):
                self.set_v1_until(setting)
                response = self.call(API, {"type": "odoo.healthcheck"}, scheme="v1")
                body = self.assertProblem(response, 401, "WEBHOOK.SIGNATURE_INVALID")
                self.assertIn("signature scheme v1", body["detail"])
                self.assertIn(says, body["detail"])
                self.assertIn("v2", body["detail"])
        self.assertEqual(self.call(API, {"type": "odoo.healthcheck"}).status_code, 201)

    def test_bad_signature(self):
        body = self.assertProblem(
            self.call(API, {"type": "odoo.healthcheck"}, key="0" * 64), 401, "WEBHOOK.SIGNATURE_INVALID"
        )
        self.assertFalse(body["ipai"]["retryable"])
        self.assertEqual(body["instance"], API)

    def test_unknown_key_id(self):
        self.assertProblem(
            self.call(API, {"type": "odoo.healthcheck"}, key_id="pk_unknown"), 401, "WEBHOOK.SIGNATURE_INVALID"
        )

    def test_stale_timestamp(self):
        # 10 s outside the 300 s window, not 1 s: the request itself takes time, and
        # int(time.time()) truncates, so -301 passed as 300.x on a loaded machine.
        for skew in (-310, 3600):
            with self.subTest(skew=skew):
                self.assertProblem(
                    self.call(API, {"type": "odoo.healthcheck"}, timestamp=int(time.time()) - skew),
                    401,
                    "WEBHOOK.TIMESTAMP_STALE",
                )

    def test_missing_headers(self):
        response = self.url_open(API, data=b"{}", headers={"Content-Type": "application/json"})
        body = self.assertProblem(response, 401, "API.AUTH_MISSING")
        self.assertIn("X-Pulser-Signature", body["detail"])

    # -------------------------------------------------------------- bad requests

    def test_bad_json(self):
        self.assertProblem(self.call(API, raw=b"{not json"), 400, "API.REQUEST_INVALID")
        self.assertProblem(self.call(API, raw=b"[1, 2]"), 400, "API.REQUEST_INVALID")
        self.assertProblem(
            self.call(API, {"type": "odoo.healthcheck"}, content_type="text/plain"), 400, "API.REQUEST_INVALID"
        )

    def test_unknown_type(self):
        self.assertProblem(self.call(API, {"type": "odoo.nope"}), 422, "INTENT.TYPE_UNKNOWN")

    def test_bad_args_list_json_paths(self):
        body = self.assertProblem(
            self.call(API, {"type": "test.echo", "args": {"value": 1, "nested": {"n": "x"}}}),
            422,
            "INTENT.ARGS_INVALID",
        )
        self.assertEqual(sorted(e["path"] for e in body["errors"]), ["$.nested.n", "$.value"])
        body = self.assertProblem(
            self.call(API, {"type": "odoo.healthcheck", "priority": "high", "bogus": 1}), 422, "INTENT.ARGS_INVALID"
        )
        self.assertEqual(sorted(e["path"] for e in body["errors"]), ["$.bogus", "$.priority"])

    def test_not_found_and_other_clients_intents(self):
        self.assertProblem(self.call(f"{API}/{'f' * 32}"), 404, "INTENT.NOT_FOUND")
        other, other_key = self.env["ipai.pulser.client"]._create_with_key("other agent", allowed_intent_types="*")
        theirs = self.call(API, {"type": "odoo.healthcheck"}, key_id=other.key_id, key=other_key).json()
        self.assertProblem(self.call(f"{API}/{theirs['ref']}"), 404, "INTENT.NOT_FOUND")

    def test_correlation_id_echoed_in_problem(self):
        body = self.assertProblem(
            self.call(API, {"type": "odoo.nope"}, headers={"X-Correlation-Id": "corr-42"}),
            422,
            "INTENT.TYPE_UNKNOWN",
        )
        self.assertEqual(body["ipai"]["correlation_id"], "corr-42")

    def test_hostile_bodies_are_problems(self):
        """What PostgreSQL or the parser would choke on is refused as 400, never a 500."""
        bodies = {
            "NUL in args": b'{"type": "test.echo", "args": {"value": "a\\u0000b"}}',
            "NUL in a key": b'{"type": "odoo.healthcheck", "idempotency_key": "a\\u0000b"}',
            "NaN": b'{"type": "test.crash", "args": {"n": NaN}}',
            "overflowing float": b'{"type": "test.crash", "args": {"n": 1e400}}',
            "nested too deeply": b"[" * 100_000 + b"]" * 100_000,
        }
        for name, raw in bodies.items():
            with self.subTest(name):
                self.assertProblem(self.call(API, raw=raw), 400, "API.REQUEST_INVALID")
        self.assertFalse(self.env["ipai.pulser.intent"].search_count([("source", "=", self.client.key_id)]))

    def test_declared_body_over_the_limit_is_413(self):
        self.assertProblem(self.call(API, raw=b" " * (MAX_BODY + 1)), 413, "API.REQUEST_INVALID")
        # exactly the limit is read (then refused as JSON, not for its size)
        self.assertProblem(self.call(API, raw=b" " * MAX_BODY), 400, "API.REQUEST_INVALID")

    def test_chunked_body_over_the_limit_is_refused_before_it_is_read(self):
        """A chunked body declares no length: the server must count it as it arrives and
        answer 413 once it passes 1 MiB, not buffer all of it first."""
        total = 64 * MAX_BODY
        chunk = b" " * (64 * 1024)
        url = urlsplit(self.base_url())
        with self.allow_requests():
            head = self.chunked_head(url)
            sent, answer = self.send_chunked(url, head, chunk, total)
        # socket buffers hold a few MiB at most: far less than the 64 MiB offered
        self.assertLess(sent, total // 4, f"the client sent {sent} bytes before the answer")
        status_line, _, rest = answer.partition(b"\r\n")
        self.assertIn(b" 413 ", status_line, answer[:500])
        headers, _, body = rest.partition(b"\r\n\r\n")
        self.assertIn(b"connection: close", headers.lower())
        doc = json.loads(body)
        self.assertEqual(doc["ipai"]["code"], "API.REQUEST_INVALID")
        self.assertEqual(doc["status"], 413)

    def test_chunked_form_body_is_refused_before_it_is_read(self):
        """Odoo parses form bodies for every http route before the route runs (werkzeug
        buffers a chunked one whole): the API refuses form content types before that."""
        url = urlsplit(self.base_url())
        total = 64 * MAX_BODY
        for content_type in ("application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
            with self.subTest(content_type=content_type), self.allow_requests():
                head = self.chunked_head(url, content_type)
                sent, answer = self.send_chunked(url, head, b"a=" + b"b" * (64 * 1024 - 2), total)
                self.assertLess(sent, total // 4, f"the client sent {sent} bytes before the answer")
                self.assertIn(b" 400 ", answer.partition(b"\r\n")[0], answer[:500])
                doc = json.loads(answer.partition(b"\r\n\r\n")[2])
                self.assertEqual(doc["ipai"]["code"], "API.REQUEST_INVALID")
                self.assertIn("application/json", doc["detail"])

    def test_malformed_chunked_body_is_400(self):
        url = urlsplit(self.base_url())
        with self.allow_requests():
            request_head = self.chunked_head(url)
            with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
                sock.sendall(request_head + b"not-hex\r\n{}\r\n0\r\n\r\n")
                answer = b""
                while part := sock.recv(65536):
                    answer += part
        self.assertIn(b" 400 ", answer.partition(b"\r\n")[0], answer[:500])
        self.assertEqual(json.loads(answer.partition(b"\r\n\r\n")[2])["ipai"]["code"], "API.REQUEST_INVALID")

    def test_non_ascii_digits_ref_is_not_found(self):
        # str.isdigit() says yes to "²", int() says no: a 404, not a 500
        for ref in ("\u00b2", "\u0663", "9" * 40):
            with self.subTest(ref=ref):
                self.assertProblem(self.call(f"{API}/{ref}"), 404, "INTENT.NOT_FOUND")

    def test_wrong_method_and_unknown_path(self):
        wrong = ((API, "GET", "POST"), (f"{API}/abc/cancel", "GET", "POST"), (f"{API}/abc", "PUT", "GET"))
        for path, method, allowed in wrong:
            with self.subTest(path=path, method=method):
                response = self.url_open(path, data=b"{}" if method != "GET" else None, method=method)
                body = self.assertProblem(response, 405, "API.REQUEST_INVALID")
                self.assertEqual(response.headers["Allow"], allowed)
                self.assertEqual(body["instance"], path)
        for path in (f"{API}/abc/retry", "/pulser/v1/other"):
            with self.subTest(path=path):
                self.assertProblem(self.url_open(path), 404, "API.REQUEST_INVALID")

    def test_last_used_at_is_refreshed_at_most_once_a_minute(self):
        client, key = self.env["ipai.pulser.client"]._create_with_key("busy agent", allowed_intent_types="*")
        self.assertEqual(self.call(API, {"type": "odoo.healthcheck"}, key_id=client.key_id, key=key).status_code, 201)
        self.assertTrue(client.last_used_at)
        for age, refreshed in ((30, False), (90, True)):
            with self.subTest(age=age):
                before = fields.Datetime.now() - timedelta(seconds=age)
                client.last_used_at = before
                client.flush_recordset()
                self.call(API, {"type": "odoo.healthcheck", "priority": age}, key_id=client.key_id, key=key)
                client.invalidate_recordset(["last_used_at"])
                self.assertEqual(client.last_used_at != before, refreshed)
