"""Inbound webhooks: HMAC verification, a replay window, and duplicate refusal in PostgreSQL.

Two well-known schemes:

* **Standard Webhooks** (https://www.standardwebhooks.com/, spec "Verifying webhook
  authenticity"): headers ``webhook-id``, ``webhook-timestamp`` (unix seconds),
  ``webhook-signature`` = space-separated ``v1,<base64 HMAC-SHA256>`` over
  ``"<id>.<timestamp>.<raw body>"``; secrets look like ``whsec_<base64 key>``. Svix and
  the senders built on the standard's libraries use it.
* **GitHub** ("Validating webhook deliveries"): ``X-Hub-Signature-256`` =
  ``sha256=<hex HMAC-SHA256 of the raw body>`` keyed with the secret's UTF-8 bytes, the
  delivery GUID in ``X-GitHub-Delivery``; no timestamp, so replay protection rests on the
  remembered delivery ids alone.

Order of checks (each failure is a :class:`~ipai_ops.sdk.errors.WebhookRejected`,
which the middleware answers as a problem):

1. headers present, else ``API.AUTH_MISSING`` (401): the request is not signed at all,
   which the registry tells apart from a signature that does not match;
2. signature against every active secret (rotation), compared in constant time, else
   ``WEBHOOK.SIGNATURE_INVALID`` (401); a malformed signature or timestamp header too;
3. timestamp within the replay window (default 300 s either way), else
   ``WEBHOOK.TIMESTAMP_STALE`` (401): checked after the signature, so a forger learns
   nothing about the clock and a correctly signed old request is reported as stale;
4. delivery id not seen before, else ``WEBHOOK.DELIVERY_DUPLICATE`` (409); ids are
   remembered in ``ops.webhook_deliveries`` (migration 0004).

Senders deliver at least once, so a delivery whose handler failed must be accepted when
it is retried. :meth:`WebhookVerifier.receive` claims the id, yields, and then completes
the claim (handler succeeded) or deletes it (handler raised). A claim whose process died
is taken over after its lease. Alternatively, ``receive(..., conn=conn)`` claims the id
inside the caller's own transaction: committed with the handler's writes, gone with
their rollback.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg2.extensions

from ipai_ops import store
from ipai_ops.sdk._pg import SharedConnection
from ipai_ops.sdk.errors import Failure, WebhookRejected
from ipai_ops.store import OpsDatabaseUnavailable

log = logging.getLogger(__name__)

AUTH_MISSING = "API.AUTH_MISSING"
SIGNATURE_INVALID = "WEBHOOK.SIGNATURE_INVALID"
TIMESTAMP_STALE = "WEBHOOK.TIMESTAMP_STALE"
DELIVERY_DUPLICATE = "WEBHOOK.DELIVERY_DUPLICATE"
DATABASE_UNAVAILABLE = "TRANSPORT.DATABASE_UNAVAILABLE"

#: Seconds a signed delivery stays acceptable either side of the receiver's clock.
DEFAULT_TOLERANCE_SECONDS = 300
#: Seconds after which an uncompleted claim (its process died) may be taken over.
DEFAULT_LEASE_SECONDS = 600
#: Bounded work per request: at most this many signatures are tried per secret.
MAX_SIGNATURES = 16
MAX_HEADER_CHARS = 4096
MAX_DELIVERY_ID_CHARS = 256
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_PRINTABLE = re.compile(r"^[\x21-\x7e]+$")


# --------------------------------------------------------------------------- headers


def normalise_headers(headers: Any) -> dict[str, str]:
    """Lower-cased header names -> first value, from whatever a framework hands over.

    Accepts a mapping or an object with ``items()`` (dict, Starlette/Werkzeug headers),
    a WSGI environ (``HTTP_*`` keys), an ASGI scope, or ASGI ``[(b"name", b"value")]`` pairs.
    """
    if isinstance(headers, Mapping) and ("REQUEST_METHOD" in headers or "wsgi.version" in headers):
        return {
            key[5:].replace("_", "-").lower(): value
            for key, value in headers.items()
            if key.startswith("HTTP_") and isinstance(value, str)
        }
    if isinstance(headers, Mapping) and "headers" in headers and headers.get("type") in ("http", "websocket"):
        headers = headers["headers"]
    pairs: Iterable[Any] = headers.items() if hasattr(headers, "items") else headers
    out: dict[str, str] = {}
    for key, value in pairs:
        name = key.decode("latin-1") if isinstance(key, bytes) else str(key)
        text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
        out.setdefault(name.lower(), text)
    return out


# --------------------------------------------------------------------------- schemes


@dataclass(frozen=True)
class Signed:
    """What a scheme read from the headers (signatures already decoded to bytes)."""

    delivery_id: str
    timestamp: str | None
    signatures: tuple[bytes, ...]
    event: str | None = None


class WebhookScheme(ABC):
    name: str
    #: Header whose value is the signature (named in error messages).
    signature_header: str

    @abstractmethod
    def key(self, secret: str | bytes) -> bytes:
        """The HMAC key of a configured secret."""

    @abstractmethod
    def parse(self, headers: Mapping[str, str]) -> Signed:
        """Read the signing headers; raise ``WebhookRejected`` when absent or malformed."""

    @abstractmethod
    def signed_content(self, signed: Signed, body: bytes) -> bytes:
        """The bytes the sender's HMAC covers."""

    @abstractmethod
    def sign(
        self, secret: str | bytes, body: bytes, *, delivery_id: str, timestamp: int | None = None
    ) -> dict[str, str]:
        """The headers a sender adds (for tests and for our own senders)."""

    def _required(self, headers: Mapping[str, str], names: Sequence[str]) -> dict[str, str]:
        values = {name: (headers.get(name) or "").strip() for name in names}
        missing = [name for name, value in values.items() if not value]
        if missing:
            raise WebhookRejected(
                AUTH_MISSING,
                f"webhook is not signed: missing header(s) {', '.join(missing)}",
                details={"scheme": self.name, "missing_headers": missing},
            )
        too_long = [name for name, value in values.items() if len(value) > MAX_HEADER_CHARS]
        if too_long:
            raise WebhookRejected(
                SIGNATURE_INVALID,
                f"webhook header(s) {', '.join(too_long)} too long",
                details={"scheme": self.name, "headers": too_long},
            )
        return values

    def _delivery_id(self, value: str, header: str) -> str:
        if len(value) > MAX_DELIVERY_ID_CHARS or not _PRINTABLE.match(value):
            raise WebhookRejected(
                SIGNATURE_INVALID,
                f"{header} must be 1..{MAX_DELIVERY_ID_CHARS} printable characters",
                details={"scheme": self.name, "header": header},
            )
        return value


class StandardWebhooks(WebhookScheme):
    name = "standard"
    signature_header = "webhook-signature"
    id_header = "webhook-id"
    timestamp_header = "webhook-timestamp"
    secret_prefix = "whsec_"

    def key(self, secret: str | bytes) -> bytes:
        if isinstance(secret, bytes):
            key = secret
        else:
            text = secret.strip()
            text = text.removeprefix(self.secret_prefix)
            try:
                # Unpadded base64 is common in the wild; b64decode ignores surplus padding.
                key = base64.b64decode(text + "==", validate=False)
            except binascii.Error as exc:
                raise ValueError("a Standard Webhooks secret is 'whsec_' + base64") from exc
        if not key:
            raise ValueError("webhook secret is empty")
        return key

    def parse(self, headers: Mapping[str, str]) -> Signed:
        values = self._required(headers, (self.id_header, self.timestamp_header, self.signature_header))
        delivery_id = self._delivery_id(values[self.id_header], self.id_header)
        timestamp = values[self.timestamp_header]
        if not _TIMESTAMP.match(timestamp):
            raise WebhookRejected(
                SIGNATURE_INVALID,
                f"{self.timestamp_header} must be unix seconds",
                details={"scheme": self.name, "header": self.timestamp_header},
            )
        signatures = []
        for token in values[self.signature_header].split()[:MAX_SIGNATURES]:
            version, _, encoded = token.partition(",")
            if version != "v1" or not encoded:
                continue  # other versions (v1a: asymmetric) are not ours to check
            try:
                signatures.append(base64.b64decode(encoded, validate=True))
            except binascii.Error:
                continue
        if not signatures:
            raise WebhookRejected(
                SIGNATURE_INVALID,
                f"{self.signature_header} holds no v1 signature",
                details={"scheme": self.name, "header": self.signature_header},
            )
        return Signed(delivery_id, timestamp, tuple(signatures))

    def signed_content(self, signed: Signed, body: bytes) -> bytes:
        return f"{signed.delivery_id}.{signed.timestamp}.".encode() + body

    def sign(
        self, secret: str | bytes, body: bytes, *, delivery_id: str, timestamp: int | None = None
    ) -> dict[str, str]:
        stamp = str(int(time.time()) if timestamp is None else int(timestamp))
        content = self.signed_content(Signed(delivery_id, stamp, ()), body)
        digest = hmac.new(self.key(secret), content, hashlib.sha256).digest()
        return {
            self.id_header: delivery_id,
            self.timestamp_header: stamp,
            self.signature_header: "v1," + base64.b64encode(digest).decode("ascii"),
        }


class GitHubWebhooks(WebhookScheme):
    name = "github"
    signature_header = "x-hub-signature-256"
    id_header = "x-github-delivery"
    event_header = "x-github-event"

    def key(self, secret: str | bytes) -> bytes:
        key = secret if isinstance(secret, bytes) else secret.encode("utf-8")
        if not key:
            raise ValueError("webhook secret is empty")
        return key

    def parse(self, headers: Mapping[str, str]) -> Signed:
        values = self._required(headers, (self.signature_header, self.id_header))
        delivery_id = self._delivery_id(values[self.id_header], self.id_header)
        scheme, _, digest = values[self.signature_header].partition("=")
        if scheme.lower() != "sha256" or not _HEX64.match(digest):
            raise WebhookRejected(
                SIGNATURE_INVALID,
                "X-Hub-Signature-256 is invalid: expected sha256=<64 hex digits>",
                details={"scheme": self.name, "header": self.signature_header},
            )
        event = (headers.get(self.event_header) or "").strip()[:128] or None
        return Signed(delivery_id, None, (bytes.fromhex(digest),), event)

    def signed_content(self, signed: Signed, body: bytes) -> bytes:
        return body

    def sign(
        self, secret: str | bytes, body: bytes, *, delivery_id: str, timestamp: int | None = None
    ) -> dict[str, str]:
        content = self.signed_content(Signed(delivery_id, None, ()), body)
        digest = hmac.new(self.key(secret), content, hashlib.sha256).hexdigest()
        return {"X-Hub-Signature-256": "sha256=" + digest, "X-GitHub-Delivery": delivery_id}


STANDARD_WEBHOOKS = StandardWebhooks()
GITHUB = GitHubWebhooks()
SCHEMES: dict[str, WebhookScheme] = {s.name: s for s in (STANDARD_WEBHOOKS, GITHUB)}


# --------------------------------------------------------------------------- deliveries


@dataclass(frozen=True)
class Delivery:
    """A verified delivery: safe to act on once its id is claimed."""

    provider: str
    delivery_id: str
    body: bytes
    #: The signed timestamp (unix seconds); None for schemes without one (GitHub).
    timestamp: int | None = None
    #: The event name when the scheme sends it in a header (GitHub's X-GitHub-Event).
    event: str | None = None

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Claim:
    provider: str
    delivery_id: str
    attempt: int


def _duplicate(provider: str, delivery_id: str, state: str | None) -> WebhookRejected:
    if state == "in_progress":
        message = "this delivery is being processed by an earlier attempt; retry later if that one fails"
    else:
        message = "this delivery was already processed"
    # The id stays out of the message: a message is fingerprinted, ids would split the group.
    return WebhookRejected(
        DELIVERY_DUPLICATE, message, details={"provider": provider, "delivery_id": delivery_id, "state": state}
    )


def _unavailable(exc: BaseException) -> Failure:
    return Failure(
        DATABASE_UNAVAILABLE,
        "webhook delivery log unavailable; retry later",
        details={"reason": str(exc)},
    )


def _claim(
    conn: psycopg2.extensions.connection,
    provider: str,
    delivery_id: str,
    *,
    endpoint: str | None,
    completed: bool,
    lease_seconds: int,
) -> tuple[int, str | None]:
    with conn.cursor() as cur:
        cur.execute(
            store.query("claim_webhook_delivery"),
            {
                "provider": provider,
                "delivery_id": delivery_id,
                "endpoint": endpoint,
                "completed": completed,
                "lease_seconds": lease_seconds,
            },
        )
        row = cur.fetchone()
    return (row[0], row[1]) if row else (0, None)


def claim_delivery(
    conn: psycopg2.extensions.connection,
    provider: str,
    delivery_id: str,
    *,
    endpoint: str | None = None,
    lease_seconds: int = DEFAULT_LEASE_SECONDS,
) -> None:
    """Claim a delivery id inside the caller's open transaction (no commit here).

    The claim is complete once the caller commits and vanishes with its rollback. A
    concurrent delivery of the same id waits on the unique key until then. Raises
    ``WEBHOOK.DELIVERY_DUPLICATE`` when the id is taken.
    """
    attempt, state = _claim(conn, provider, delivery_id, endpoint=endpoint, completed=True, lease_seconds=lease_seconds)
    if not attempt:
        raise _duplicate(provider, delivery_id, state)


def purge_deliveries(conn: psycopg2.extensions.connection, *, older_than_days: int, chunk: int = 10_000) -> int:
    """Forget delivery ids received more than N days ago, ``chunk`` rows per transaction.

    A purged id is accepted again. Standard Webhooks deliveries are also bounded by their
    timestamp window, so only a few minutes matter for them; GitHub deliveries carry no
    timestamp, so keep their ids at least as long as a replayed delivery must be refused.
    """
    return store.purge_in_chunks(conn, "purge_webhook_deliveries", older_than_days=older_than_days, chunk=chunk)


class DeliveryStore:
    """Delivery ids in ``ops.webhook_deliveries``, through one shared, time-bounded connection."""

    def __init__(
        self,
        dsn: str,
        *,
        lease_seconds: int = DEFAULT_LEASE_SECONDS,
        connect_timeout: int = 2,
        statement_timeout_ms: int = 2000,
        retry_interval: float = 1.0,
    ) -> None:
        if lease_seconds < 1:
            raise ValueError("lease_seconds must be >= 1")
        self.lease_seconds = lease_seconds
        self._db = SharedConnection(
            dsn,
            application_name="ipai-ops webhooks",
            connect_timeout=connect_timeout,
            statement_timeout_ms=statement_timeout_ms,
            retry_interval=retry_interval,
        )

    def claim(self, provider: str, delivery_id: str, *, endpoint: str | None = None) -> Claim:
        """Claim and commit; ``WEBHOOK.DELIVERY_DUPLICATE`` when taken, 503 failure when PostgreSQL is down."""

        def work(conn: psycopg2.extensions.connection) -> tuple[int, str | None]:
            with conn:
                return _claim(
                    conn,
                    provider,
                    delivery_id,
                    endpoint=endpoint,
                    completed=False,
                    lease_seconds=self.lease_seconds,
                )

        try:
            attempt, state = self._db.run(work)
        except OpsDatabaseUnavailable as exc:
            raise _unavailable(exc) from None
        if not attempt:
            raise _duplicate(provider, delivery_id, state)
        return Claim(provider, delivery_id, attempt)

    def _finish(self, claim: Claim, query: str) -> bool:
        def work(conn: psycopg2.extensions.connection) -> bool:
            with conn, conn.cursor() as cur:
                cur.execute(
                    store.query(query),
                    {"provider": claim.provider, "delivery_id": claim.delivery_id, "attempt": claim.attempt},
                )
                return cur.rowcount == 1

        try:
            return self._db.run(work)
        except Exception as exc:  # the handler's outcome stands; the lease frees the claim
            log.warning(
                "webhook delivery %s/%s: %s failed (%s); the claim expires after %ss",
                claim.provider,
                claim.delivery_id,
                query,
                exc,
                self.lease_seconds,
            )
            return False

    def complete(self, claim: Claim) -> bool:
        return self._finish(claim, "complete_webhook_delivery")

    def release(self, claim: Claim) -> bool:
        return self._finish(claim, "release_webhook_delivery")

    def purge(self, *, older_than_days: int, chunk: int = 10_000) -> int:
        return self._db.run(lambda conn: purge_deliveries(conn, older_than_days=older_than_days, chunk=chunk))

    def close(self) -> None:
        self._db.close()


# --------------------------------------------------------------------------- verifier


class WebhookVerifier:
    """Verifies deliveries of one scheme against one or more active secrets.

    ``provider`` keys the remembered delivery ids (default: the scheme's name); give each
    sender its own when several use one scheme. ``deliveries`` enables duplicate refusal;
    without it :meth:`receive` only verifies.
    """

    def __init__(
        self,
        scheme: str | WebhookScheme,
        *,
        secrets: Sequence[str | bytes] | str | bytes,
        provider: str | None = None,
        endpoint: str | None = None,
        tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
        deliveries: DeliveryStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(scheme, str):
            if scheme not in SCHEMES:
                raise KeyError(f"unknown webhook scheme {scheme!r}; known: {', '.join(SCHEMES)}")
            scheme = SCHEMES[scheme]
        if not isinstance(scheme, WebhookScheme):
            raise TypeError(f"scheme must be a scheme name or a WebhookScheme, not {type(scheme).__name__}")
        self.scheme = scheme
        if isinstance(secrets, (str, bytes)):
            secrets = [secrets]
        self._keys = tuple(self.scheme.key(secret) for secret in secrets)
        if not self._keys:
            raise ValueError("at least one secret is required")
        if tolerance_seconds < 1:
            raise ValueError("tolerance_seconds must be >= 1")
        self.provider = provider or self.scheme.name
        self.endpoint = endpoint
        self.tolerance_seconds = tolerance_seconds
        self.deliveries = deliveries
        self._clock = clock

    def verify(self, headers: Any, body: bytes) -> Delivery:
        """Headers, signature, timestamp (no duplicate check): the verified :class:`Delivery`."""
        if not isinstance(body, (bytes, bytearray, memoryview)):
            raise TypeError("verify the raw request body (bytes), not a decoded or re-serialised one")
        body = bytes(body)
        signed = self.scheme.parse(normalise_headers(headers))
        content = self.scheme.signed_content(signed, body)
        matched = False
        for key in self._keys:
            expected = hmac.new(key, content, hashlib.sha256).digest()
            for signature in signed.signatures:
                # No early exit: the time taken does not depend on which secret matched.
                matched |= hmac.compare_digest(expected, signature)
        if not matched:
            raise WebhookRejected(
                SIGNATURE_INVALID,
                f"{self.scheme.signature_header} does not match the payload: no matching signature found",
                details={"scheme": self.scheme.name, "provider": self.provider, "secrets": len(self._keys)},
            )
        timestamp = int(signed.timestamp) if signed.timestamp is not None else None
        if timestamp is not None:
            skew = self._clock() - timestamp
            if abs(skew) > self.tolerance_seconds:
                raise WebhookRejected(
                    TIMESTAMP_STALE,
                    f"webhook timestamp is {int(abs(skew))}s {'old' if skew > 0 else 'in the future'}; "
                    f"the window is {self.tolerance_seconds}s",
                    details={"skew_seconds": int(skew), "window_seconds": self.tolerance_seconds},
                )
        return Delivery(self.provider, signed.delivery_id, body, timestamp, signed.event)

    @contextmanager
    def receive(
        self, headers: Any, body: bytes, *, conn: psycopg2.extensions.connection | None = None
    ) -> Iterator[Delivery]:
        """Verify, claim the delivery id, run the block; complete the claim, or release it if the block raised.

        With ``conn`` the claim is taken in that connection's open transaction instead
        (committed or rolled back by the caller, with the handler's own writes).
        """
        delivery = self.verify(headers, body)
        if conn is not None:
            claim_delivery(conn, self.provider, delivery.delivery_id, endpoint=self.endpoint)
            yield delivery
            return
        if self.deliveries is None:
            yield delivery
            return
        claim = self.deliveries.claim(self.provider, delivery.delivery_id, endpoint=self.endpoint)
        try:
            yield delivery
        except BaseException:
            self.deliveries.release(claim)
            raise
        self.deliveries.complete(claim)

    @asynccontextmanager
    async def areceive(self, headers: Any, body: bytes) -> AsyncIterator[Delivery]:
        """:meth:`receive` for coroutines: the database calls run in a worker thread."""
        delivery = self.verify(headers, body)
        if self.deliveries is None:
            yield delivery
            return
        claim = await asyncio.to_thread(
            self.deliveries.claim, self.provider, delivery.delivery_id, endpoint=self.endpoint
        )
        try:
            yield delivery
        except BaseException:
            await asyncio.to_thread(self.deliveries.release, claim)
            raise
        await asyncio.to_thread(self.deliveries.complete, claim)
