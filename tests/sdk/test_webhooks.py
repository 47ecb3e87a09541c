"""Webhook verification: Standard Webhooks and GitHub; good, bad, stale, replayed; at-least-once claims."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import threading

import psycopg2
import pytest

from ipai_ops.sdk import Delivery, DeliveryStore, Failure, WebhookRejected, WebhookVerifier
from ipai_ops.sdk.webhooks import (
    GITHUB,
    STANDARD_WEBHOOKS,
    claim_delivery,
    normalise_headers,
    purge_deliveries,
)
from tests.bridge.conftest import free_port
from tests.conftest import query_rows

# The published examples of each scheme (the standard's reference tests, GitHub's docs).
STANDARD_VECTOR = {
    "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
    "timestamp": 1614265330,
    "body": b'{"test": 2432232314}',
    "signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
}
GITHUB_VECTOR = {
    "secret": "It's a Secret to Everybody",
    "body": b"Hello, World!",
    "signature": "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
}
NOW = 1_700_000_000
SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"o" * 32).decode()
BODY = b'{"type":"invoice.paid","id":7}'


def standard(**kwargs) -> WebhookVerifier:
    return WebhookVerifier("standard", secrets=kwargs.pop("secrets", [SECRET]), clock=lambda: NOW, **kwargs)


def signed(body: bytes = BODY, *, secret: str = SECRET, delivery_id: str = "msg_1", at: int = NOW) -> dict:
    return STANDARD_WEBHOOKS.sign(secret, body, delivery_id=delivery_id, timestamp=at)


def rejected(verifier: WebhookVerifier, headers, body: bytes = BODY) -> WebhookRejected:
    with pytest.raises(WebhookRejected) as err:
        verifier.verify(headers, body)
    return err.value


# --------------------------------------------------------------------------- known answers


def test_standard_webhooks_published_example():
    headers = STANDARD_WEBHOOKS.sign(
        STANDARD_VECTOR["secret"],
        STANDARD_VECTOR["body"],
        delivery_id=STANDARD_VECTOR["id"],
        timestamp=STANDARD_VECTOR["timestamp"],
    )
    assert headers["webhook-signature"] == STANDARD_VECTOR["signature"]
    verifier = WebhookVerifier(
        "standard", secrets=STANDARD_VECTOR["secret"], clock=lambda: STANDARD_VECTOR["timestamp"] + 10
    )
    delivery = verifier.verify(headers, STANDARD_VECTOR["body"])
    assert delivery == Delivery("standard", STANDARD_VECTOR["id"], STANDARD_VECTOR["body"], 1614265330, None)
    assert delivery.json() == {"test": 2432232314}


def test_github_published_example():
    headers = GITHUB.sign(GITHUB_VECTOR["secret"], GITHUB_VECTOR["body"], delivery_id="72d3162e-cc78-11e3-81ab")
    assert headers["X-Hub-Signature-256"] == GITHUB_VECTOR["signature"]
    verifier = WebhookVerifier("github", secrets=[GITHUB_VECTOR["secret"]], provider="github-app")
    delivery = verifier.verify({**headers, "X-GitHub-Event": "push"}, GITHUB_VECTOR["body"])
    assert (delivery.provider, delivery.delivery_id, delivery.timestamp, delivery.event) == (
        "github-app",
        "72d3162e-cc78-11e3-81ab",
        None,
        "push",
    )


# --------------------------------------------------------------------------- good / bad / stale


def test_good_signature_from_any_header_shape():
    verifier = standard()
    headers = signed()
    environ = {"REQUEST_METHOD": "POST", **{"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()}}
    scope = {"type": "http", "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}
    upper = {k.title(): v for k, v in headers.items()}
    for shape in (headers, environ, scope, scope["headers"], upper):
        assert verifier.verify(shape, BODY).delivery_id == "msg_1"
    assert normalise_headers(environ) == headers


def test_bad_signature_changed_body_wrong_secret():
    verifier = standard()
    for headers, body in (
        (signed(), BODY + b" "),
        (signed(secret=OLD_SECRET), BODY),
        ({**signed(), "webhook-id": "msg_2"}, BODY),
        ({**signed(), "webhook-timestamp": str(NOW - 1)}, BODY),
    ):
        err = rejected(verifier, headers, body)
        assert err.failure_code == "WEBHOOK.SIGNATURE_INVALID"
        assert "no matching signature found" in err.message


def test_rotation_accepts_every_active_secret_and_multiple_signatures():
    verifier = standard(secrets=[SECRET, OLD_SECRET])
    assert verifier.verify(signed(secret=OLD_SECRET), BODY)
    # A sender mid-rotation signs with both; unknown versions and garbage are skipped.
    stranger = "whsec_" + base64.b64encode(b"x" * 32).decode()
    both = f"v1a,AAAA v1,not-base64! {signed(secret=stranger)['webhook-signature']} {signed()['webhook-signature']}"
    assert standard().verify({**signed(), "webhook-signature": both}, BODY)


def test_stale_and_future_timestamps_after_the_signature():
    verifier = standard()
    err = rejected(verifier, signed(at=NOW - 301))
    assert err.failure_code == "WEBHOOK.TIMESTAMP_STALE" and "301s old" in err.message
    err = rejected(verifier, signed(at=NOW + 400))
    assert err.failure_code == "WEBHOOK.TIMESTAMP_STALE" and "in the future" in err.message
    assert verifier.verify(signed(at=NOW - 300), BODY)  # the window's edge is inside
    # A forged old request is a bad signature, never "stale": the clock is not revealed.
    assert rejected(verifier, {**signed(at=NOW - 9999), "webhook-id": "forged"}).failure_code == (
        "WEBHOOK.SIGNATURE_INVALID"
    )
    assert standard(tolerance_seconds=600).verify(signed(at=NOW - 500), BODY)


def test_missing_and_malformed_headers():
    verifier = standard()
    headers = signed()
    del headers["webhook-signature"]
    err = rejected(verifier, headers)
    assert err.failure_code == "API.AUTH_MISSING" and err.details["missing_headers"] == ["webhook-signature"]
    assert rejected(verifier, {}).details["missing_headers"] == ["webhook-id", "webhook-timestamp", "webhook-signature"]
    for bad in (
        {"webhook-timestamp": "1700000000.5"},
        {"webhook-signature": "v2,abc"},
        {"webhook-id": "has space"},
        {"webhook-signature": "v1," + "A" * 5000},
    ):
        assert rejected(verifier, {**signed(), **bad}).failure_code == "WEBHOOK.SIGNATURE_INVALID"
    github = WebhookVerifier("github", secrets="s")
    assert rejected(github, {"X-GitHub-Delivery": "d"}).failure_code == "API.AUTH_MISSING"
    for value in ("sha1=" + "0" * 40, "sha256=xyz", "0" * 64):
        headers = {"X-GitHub-Delivery": "d", "X-Hub-Signature-256": value}
        assert rejected(github, headers).failure_code == "WEBHOOK.SIGNATURE_INVALID"
    assert rejected(github, {**GITHUB.sign("other", BODY, delivery_id="d")}).failure_code == (
        "WEBHOOK.SIGNATURE_INVALID"
    )


def test_configuration_errors_are_programming_errors():
    with pytest.raises(ValueError):
        WebhookVerifier("standard", secrets=[])
    with pytest.raises(ValueError):
        WebhookVerifier("github", secrets=[""])
    with pytest.raises(KeyError):
        WebhookVerifier("stripe", secrets=["x"])
    with pytest.raises(TypeError):
        standard().verify(signed(), BODY.decode())


# --------------------------------------------------------------------------- duplicates (PostgreSQL)


@pytest.fixture
def deliveries(clean_ops_dsn):
    store = DeliveryStore(clean_ops_dsn)
    try:
        yield store
    finally:
        store.close()


def rows(dsn: str) -> list[tuple]:
    found = query_rows(
        dsn,
        "SELECT provider, delivery_id, endpoint, attempts, completed_at IS NOT NULL AS completed"
        " FROM ops.webhook_deliveries ORDER BY 1, 2",
    )
    return [tuple(row.values()) for row in found]


def test_replayed_delivery_is_a_duplicate(clean_ops_dsn, deliveries):
    verifier = standard(deliveries=deliveries, endpoint="/hooks/billing")
    with verifier.receive(signed(), BODY) as delivery:
        assert delivery.delivery_id == "msg_1"
    with pytest.raises(WebhookRejected) as err, verifier.receive(signed(), BODY):
        pytest.fail("a duplicate must not reach the handler")
    assert err.value.failure_code == "WEBHOOK.DELIVERY_DUPLICATE"
    assert err.value.details["state"] == "completed" and "already processed" in err.value.message
    assert "msg_1" not in err.value.message  # ids stay out of the fingerprinted message
    assert rows(clean_ops_dsn) == [("standard", "msg_1", "/hooks/billing", 1, True)]
    # Another provider may reuse the id.
    with standard(deliveries=deliveries, provider="other-sender").receive(signed(), BODY):
        pass
    assert len(rows(clean_ops_dsn)) == 2


def test_failed_handler_releases_the_id_so_the_retry_is_accepted(clean_ops_dsn, deliveries):
    verifier = standard(deliveries=deliveries)
    with pytest.raises(RuntimeError), verifier.receive(signed(), BODY):
        assert rows(clean_ops_dsn) == [("standard", "msg_1", None, 1, False)]
        raise RuntimeError("handler failed")
    assert rows(clean_ops_dsn) == []
    with verifier.receive(signed(), BODY):
        pass
    assert rows(clean_ops_dsn) == [("standard", "msg_1", None, 1, True)]


def test_in_flight_duplicate_and_lease_takeover(clean_ops_dsn, deliveries):
    verifier = standard(deliveries=deliveries)
    claim = deliveries.claim("standard", "msg_1")  # a process that will die mid-delivery
    with pytest.raises(WebhookRejected) as err, verifier.receive(signed(), BODY):
        pass
    assert err.value.details["state"] == "in_progress"
    conn = psycopg2.connect(clean_ops_dsn)
    with conn, conn.cursor() as cur:
        cur.execute("UPDATE ops.webhook_deliveries SET claimed_at = now() - interval '11 minutes'")
    conn.close()
    with verifier.receive(signed(), BODY):
        pass
    assert rows(clean_ops_dsn) == [("standard", "msg_1", None, 2, True)]
    # The dead attempt's late release cannot undo the takeover.
    assert deliveries.release(claim) is False
    assert rows(clean_ops_dsn) == [("standard", "msg_1", None, 2, True)]


def test_concurrent_deliveries_of_one_id_claim_once(clean_ops_dsn):
    stores = [DeliveryStore(clean_ops_dsn) for _ in range(6)]
    outcomes: list[str] = []
    barrier = threading.Barrier(len(stores))

    def deliver(store: DeliveryStore) -> None:
        barrier.wait()
        try:
            store.claim("standard", "msg_race")
            outcomes.append("claimed")
        except WebhookRejected as exc:
            outcomes.append(exc.failure_code)

    threads = [threading.Thread(target=deliver, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        s.close()
    assert sorted(outcomes) == ["WEBHOOK.DELIVERY_DUPLICATE"] * 5 + ["claimed"]


def test_claim_in_the_callers_transaction(clean_ops_dsn):
    verifier = standard()
    conn = psycopg2.connect(clean_ops_dsn)
    try:
        with pytest.raises(RuntimeError), conn, verifier.receive(signed(), BODY, conn=conn):
            raise RuntimeError("business write failed")  # rollback takes the claim with it
        assert rows(clean_ops_dsn) == []
        with conn, verifier.receive(signed(), BODY, conn=conn):
            pass
        assert rows(clean_ops_dsn) == [("standard", "msg_1", None, 1, True)]
        with pytest.raises(WebhookRejected) as err, conn, verifier.receive(signed(), BODY, conn=conn):
            pass
        assert err.value.failure_code == "WEBHOOK.DELIVERY_DUPLICATE"
        with pytest.raises(WebhookRejected), conn:
            claim_delivery(conn, "standard", "msg_1")
    finally:
        conn.close()


def test_async_receive(clean_ops_dsn, deliveries):
    verifier = standard(deliveries=deliveries)

    async def main():
        async with verifier.areceive(signed(delivery_id="a1"), BODY) as delivery:
            assert delivery.delivery_id == "a1"
        with pytest.raises(RuntimeError):
            async with verifier.areceive(signed(delivery_id="a2"), BODY):
                raise RuntimeError("handler failed")
        with pytest.raises(WebhookRejected):
            async with verifier.areceive(signed(delivery_id="a1"), BODY):
                pass

    asyncio.run(main())
    assert rows(clean_ops_dsn) == [("standard", "a1", None, 1, True)]


def test_database_outage_is_a_retryable_failure():
    store = DeliveryStore(f"postgresql://postgres@127.0.0.1:{free_port()}/nope")
    try:
        with pytest.raises(Failure) as err, standard(deliveries=store).receive(signed(), BODY):
            pass
    finally:
        store.close()
    assert not isinstance(err.value, WebhookRejected)
    assert err.value.failure_code == "TRANSPORT.DATABASE_UNAVAILABLE"


def test_purge_forgets_old_ids(clean_ops_dsn, deliveries):
    for n in range(5):
        deliveries.complete(deliveries.claim("standard", f"m{n}"))
    conn = psycopg2.connect(clean_ops_dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "UPDATE ops.webhook_deliveries SET received_at = now() - interval '40 days' WHERE delivery_id < 'm3'"
            )
        assert purge_deliveries(conn, older_than_days=30, chunk=2) == 3
        with pytest.raises(ValueError):
            purge_deliveries(conn, older_than_days=0)
    finally:
        conn.close()
    assert [r[1] for r in rows(clean_ops_dsn)] == ["m3", "m4"]
    assert deliveries.purge(older_than_days=1) == 0


def test_secret_material_never_reaches_the_rejection():
    secret_body = json.dumps({"token": "tok_" + os.urandom(8).hex()}).encode()
    err = rejected(standard(), signed(secret_body, secret=OLD_SECRET), secret_body)
    text = json.dumps({"message": err.message, "details": err.details})
    assert SECRET.removeprefix("whsec_") not in text and OLD_SECRET.removeprefix("whsec_") not in text
    assert "tok_" not in text


def test_scheme_errors_name_the_known_schemes():
    with pytest.raises(KeyError, match="unknown webhook scheme 'stripe'; known: standard, github"):
        WebhookVerifier("stripe", secrets=["x"])
    with pytest.raises(TypeError, match="not NoneType"):
        WebhookVerifier(None, secrets=["x"])
    with pytest.raises(ValueError, match="invalid PostgreSQL DSN"):
        DeliveryStore("not a dsn")
