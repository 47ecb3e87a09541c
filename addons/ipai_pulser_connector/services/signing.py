"""Request signing: HMAC-SHA256 over ``"<timestamp>.<raw body>"`` with a per-client key.

Key scheme ("stored hashed", see readme/CONFIGURE.md):

* A client record holds ``key_id``, a random ``salt`` and ``secret_hash`` =
  sha256(signing key). It never holds the signing key.
* The signing key is *derived*: ``hex(HMAC-SHA256(pepper, "ipai-pulser-v1:<key_id>:<salt>"))``.
  The pepper lives outside the database (``ipai_pulser_pepper`` in odoo.conf or the
  ``IPAI_PULSER_PEPPER`` environment variable), so a database dump alone cannot sign.
  Without a configured pepper the database's ``database.secret`` is used (weaker:
  documented as a development default).
* The key is shown once, when the client is created or rotated (new salt).

Verification order: headers present -> key known -> signature (constant-time) ->
timestamp within the window -> not seen before (replay). A forged request thus learns
nothing about the clock, and a correctly signed old request is reported as stale.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

from .exceptions import AuthMissing, SignatureInvalid, TimestampStale

HEADER_KEY_ID = "X-Pulser-Key-Id"
HEADER_TIMESTAMP = "X-Pulser-Timestamp"
HEADER_SIGNATURE = "X-Pulser-Signature"
#: Seconds a signed request stays valid either side of the server clock.
REPLAY_WINDOW_SECONDS = 300
KEY_DERIVATION_LABEL = "ipai-pulser-v1"

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")


def derive_signing_key(pepper: str | bytes, key_id: str, salt: str) -> str:
    """The hex signing key of a client; only the pepper holder can compute it."""
    if isinstance(pepper, str):
        pepper = pepper.encode()
    message = f"{KEY_DERIVATION_LABEL}:{key_id}:{salt}".encode()
    return hmac.new(pepper, message, hashlib.sha256).hexdigest()


def secret_hash(signing_key: str) -> str:
    return hashlib.sha256(signing_key.encode()).hexdigest()


def sign(signing_key: str, timestamp: int | str, body: bytes) -> str:
    """What a client sends in ``X-Pulser-Signature``."""
    message = str(timestamp).encode() + b"." + body
    return hmac.new(signing_key.encode(), message, hashlib.sha256).hexdigest()


def signed_headers(key_id: str, signing_key: str, body: bytes, timestamp: int) -> dict[str, str]:
    return {
        HEADER_KEY_ID: key_id,
        HEADER_TIMESTAMP: str(timestamp),
        HEADER_SIGNATURE: sign(signing_key, timestamp, body),
    }


@dataclass(frozen=True)
class SignedRequest:
    key_id: str
    timestamp: int
    signature: str


def parse_headers(headers) -> SignedRequest:
    """The three auth headers, or :class:`AuthMissing` naming the absent ones."""
    values = {name: (headers.get(name) or "").strip() for name in (HEADER_KEY_ID, HEADER_TIMESTAMP, HEADER_SIGNATURE)}
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise AuthMissing(
            f"request is not signed: missing header(s) {', '.join(missing)}",
            details={"missing_headers": missing},
        )
    if not _TIMESTAMP.match(values[HEADER_TIMESTAMP]):
        raise SignatureInvalid(f"{HEADER_TIMESTAMP} must be unix seconds", details={"header": HEADER_TIMESTAMP})
    signature = values[HEADER_SIGNATURE]
    if signature.lower().startswith("sha256="):
        signature = signature[7:]
    if not _HEX64.match(signature):
        raise SignatureInvalid(
            f"{HEADER_SIGNATURE} must be 64 hex characters (HMAC-SHA256)",
            details={"header": HEADER_SIGNATURE},
        )
    return SignedRequest(values[HEADER_KEY_ID], int(values[HEADER_TIMESTAMP]), signature.lower())


def verify(
    signed: SignedRequest,
    body: bytes,
    signing_key: str | None,
    *,
    now: float,
    window: int = REPLAY_WINDOW_SECONDS,
) -> None:
    """Raise unless the signature is right and fresh. ``signing_key`` None = unknown client."""
    # An unknown key id still costs one HMAC, so timing does not reveal which ids exist.
    expected = sign(signing_key or "0" * 64, signed.timestamp, body)
    if not hmac.compare_digest(expected, signed.signature) or signing_key is None:
        raise SignatureInvalid("signature does not match the request", details={"key_id": signed.key_id})
    skew = now - signed.timestamp
    if abs(skew) > window:
        raise TimestampStale(
            f"request timestamp is {int(abs(skew))}s {'old' if skew > 0 else 'in the future'}; the window is {window}s",
            details={"skew_seconds": int(skew), "window_seconds": window},
        )
