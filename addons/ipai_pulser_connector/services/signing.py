"""Request signing: HMAC-SHA256 with a per-client key, over a versioned canonical string.

**v2** (current) signs what the request does, not only its body::

    PULSER-HMAC-SHA256-V2 \n
    <method, upper case> \n
    <canonical path> \n
    <canonical query> \n
    <key id> \n
    <timestamp> \n
    <nonce> \n
    <lower-case hex SHA-256 of the raw body>

eight lines joined by ``\n`` (no trailing newline), sent as ``X-Pulser-Signature: v2=<hex>``
with ``X-Pulser-Key-Id``, ``X-Pulser-Timestamp`` and ``X-Pulser-Nonce``. The canonical path is
the request path percent-decoded (UTF-8) and percent-encoded again, keeping ``/`` and RFC 3986
unreserved characters (``A-Z a-z 0-9 - . _ ~``), hex digits upper case. The canonical query
is each parameter's name and value decoded (``+`` is a space, as in HTML forms) and encoded
the same way (``/`` too), as ``name=value`` sorted by name then value, joined by ``&``; empty
without a query. The nonce (16-64 of ``A-Z a-z 0-9 _ -``, e.g. 128 random bits) is what
replay protection remembers: each request carries a new one.

**v1** (deprecated; accepted until ``ipai_pulser.signature_v1_until``) signs
``"<timestamp>.<raw body>"`` only, sent as ``X-Pulser-Signature: <hex>`` (or ``sha256=<hex>``):
it does not say which request it authorises, so a captured empty-body GET signature also
authorises a cancel within the window.

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
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timezone
from urllib.parse import parse_qsl, quote, unquote

from .exceptions import AuthMissing, SignatureInvalid, TimestampStale

HEADER_KEY_ID = "X-Pulser-Key-Id"
HEADER_TIMESTAMP = "X-Pulser-Timestamp"
HEADER_SIGNATURE = "X-Pulser-Signature"
HEADER_NONCE = "X-Pulser-Nonce"
SCHEME_V1 = "v1"
SCHEME_V2 = "v2"
#: First line of the v2 canonical string: the algorithm, so no other message can collide.
V2_ALGORITHM = "PULSER-HMAC-SHA256-V2"
V2_PREFIX = "v2="
#: Seconds a signed request stays valid either side of the server clock.
REPLAY_WINDOW_SECONDS = 300
KEY_DERIVATION_LABEL = "ipai-pulser-v1"

#: System parameter: the last day (UTC, YYYY-MM-DD) v1 signatures are accepted.
V1_UNTIL_PARAM = "ipai_pulser.signature_v1_until"
V1_UNTIL_DEFAULT = "2027-03-31"

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")
_NONCE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


def derive_signing_key(pepper: str | bytes, key_id: str, salt: str) -> str:
    """The hex signing key of a client; only the pepper holder can compute it."""
    if isinstance(pepper, str):
        pepper = pepper.encode()
    message = f"{KEY_DERIVATION_LABEL}:{key_id}:{salt}".encode()
    return hmac.new(pepper, message, hashlib.sha256).hexdigest()


def secret_hash(signing_key: str) -> str:
    return hashlib.sha256(signing_key.encode()).hexdigest()


def sign(signing_key: str, timestamp: int | str, body: bytes) -> str:
    """v1 (deprecated): what a client sends in ``X-Pulser-Signature``."""
    message = str(timestamp).encode() + b"." + body
    return hmac.new(signing_key.encode(), message, hashlib.sha256).hexdigest()


def signed_headers_v1(key_id: str, signing_key: str, body: bytes, timestamp: int) -> dict[str, str]:
    return {
        HEADER_KEY_ID: key_id,
        HEADER_TIMESTAMP: str(timestamp),
        HEADER_SIGNATURE: sign(signing_key, timestamp, body),
    }


def canonical_path(decoded_path: str) -> str:
    """A percent-decoded path, encoded keeping ``/`` and the unreserved characters.

    Servers pass the path their framework decoded; clients pass ``unquote(path as sent)``.
    A lone surrogate (undecodable bytes a server handed over as text) is encoded as its
    UTF-8 bytes rather than refused with an untyped error (the verifier fuzz test)."""
    return quote(decoded_path, safe="/", errors="surrogatepass")


def canonical_query(query: str | Iterable[tuple[str, str]]) -> str:
    """A raw query string (``a=1&b=x+y``) or decoded ``(name, value)`` pairs, canonical."""
    pairs = parse_qsl(query, keep_blank_values=True) if isinstance(query, str) else list(query)
    encoded = sorted(
        (quote(name, safe="", errors="surrogatepass"), quote(value, safe="", errors="surrogatepass"))
        for name, value in pairs
    )
    return "&".join(f"{name}={value}" for name, value in encoded)


def canonical_string_v2(
    *,
    method: str,
    path: str,
    query: str | Iterable[tuple[str, str]],
    key_id: str,
    timestamp: int | str,
    nonce: str,
    body: bytes,
) -> str:
    """The eight-line string v2 signs (see the module docstring). ``path`` is decoded;
    ``query`` a raw query string or decoded ``(name, value)`` pairs."""
    return "\n".join(
        (
            V2_ALGORITHM,
            method.upper(),
            canonical_path(path),
            canonical_query(query),
            key_id,
            str(timestamp),
            nonce,
            hashlib.sha256(body).hexdigest(),
        )
    )


def sign_v2(signing_key: str, canonical: str) -> str:
    return hmac.new(signing_key.encode(), canonical.encode(), hashlib.sha256).hexdigest()


def new_nonce() -> str:
    """128 random bits, URL-safe: one per request."""
    return secrets.token_urlsafe(16)


def signed_headers(
    key_id: str,
    signing_key: str,
    *,
    method: str,
    path: str,
    body: bytes = b"",
    query: str = "",
    timestamp: int,
    nonce: str | None = None,
) -> dict[str, str]:
    """The v2 headers of one request (a new nonce unless one is given). ``path`` and
    ``query`` as sent on the wire (percent-encoded)."""
    nonce = nonce or new_nonce()
    canonical = canonical_string_v2(
        method=method, path=unquote(path), query=query, key_id=key_id, timestamp=timestamp, nonce=nonce, body=body
    )
    return {
        HEADER_KEY_ID: key_id,
        HEADER_TIMESTAMP: str(timestamp),
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: V2_PREFIX + sign_v2(signing_key, canonical),
    }


@dataclass(frozen=True)
class SignedRequest:
    key_id: str
    timestamp: int
    signature: str
    scheme: str = SCHEME_V1
    nonce: str | None = None

    @property
    def replay_key(self) -> str:
        """What replay protection remembers per key id: the v2 nonce, or the v1 signature."""
        return f"{SCHEME_V2}:{self.nonce}" if self.scheme == SCHEME_V2 else self.signature


def parse_headers(headers) -> SignedRequest:
    """The auth headers, or :class:`AuthMissing` naming the absent ones.

    ``X-Pulser-Signature: v2=<hex>`` is scheme v2 (``X-Pulser-Nonce`` required); a bare hex
    or ``sha256=<hex>`` is scheme v1."""
    values = {name: (headers.get(name) or "").strip() for name in (HEADER_KEY_ID, HEADER_TIMESTAMP, HEADER_SIGNATURE)}
    signature = values[HEADER_SIGNATURE]
    scheme = SCHEME_V2 if signature.lower().startswith(V2_PREFIX) else SCHEME_V1
    nonce = (headers.get(HEADER_NONCE) or "").strip()
    if scheme == SCHEME_V2:
        values[HEADER_NONCE] = nonce
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise AuthMissing(
            f"request is not signed: missing header(s) {', '.join(missing)}",
            details={"missing_headers": missing},
        )
    if not _TIMESTAMP.match(values[HEADER_TIMESTAMP]):
        raise SignatureInvalid(f"{HEADER_TIMESTAMP} must be unix seconds", details={"header": HEADER_TIMESTAMP})
    if scheme == SCHEME_V2:
        signature = signature[len(V2_PREFIX) :]
        if not _NONCE.match(nonce):
            raise SignatureInvalid(
                f"{HEADER_NONCE} must be 16-64 characters of A-Z, a-z, 0-9, '_' and '-'",
                details={"header": HEADER_NONCE},
            )
    elif signature.lower().startswith("sha256="):
        signature = signature[7:]
    if not _HEX64.match(signature):
        raise SignatureInvalid(
            f"{HEADER_SIGNATURE} must be 'v2=' and 64 hex characters (HMAC-SHA256)",
            details={"header": HEADER_SIGNATURE},
        )
    return SignedRequest(
        values[HEADER_KEY_ID],
        int(values[HEADER_TIMESTAMP]),
        signature.lower(),
        scheme,
        nonce if scheme == SCHEME_V2 else None,
    )


def check_scheme_accepted(signed: SignedRequest, v1_until: date | None, *, now: float) -> None:
    """Refuse a v1 signature after its deprecation window (``v1_until`` None: refused)."""
    if signed.scheme != SCHEME_V1:
        return
    today = datetime.fromtimestamp(now, tz=timezone.utc).date()
    if v1_until is not None and today <= v1_until:
        return
    since = f"was accepted until {v1_until.isoformat()}" if v1_until else "is not accepted (setting not a date)"
    raise SignatureInvalid(
        f'signature scheme v1 (HMAC over "<timestamp>.<body>") {since}; sign requests with v2: '
        f"{HEADER_SIGNATURE}: v2=<hex> over method, path, query, key id, timestamp, {HEADER_NONCE} "
        "and the body digest (see the connector's readme)",
        details={"scheme": SCHEME_V1, "accepted_until": v1_until and v1_until.isoformat()},
    )


def expected_signature(
    signed: SignedRequest,
    body: bytes,
    signing_key: str,
    *,
    method: str = "",
    path: str = "",
    query: str | Iterable[tuple[str, str]] = "",
) -> str:
    if signed.scheme == SCHEME_V2:
        canonical = canonical_string_v2(
            method=method,
            path=path,
            query=query,
            key_id=signed.key_id,
            timestamp=signed.timestamp,
            nonce=signed.nonce,
            body=body,
        )
        return sign_v2(signing_key, canonical)
    return sign(signing_key, signed.timestamp, body)


def verify(
    signed: SignedRequest,
    body: bytes,
    signing_key: str | None,
    *,
    now: float,
    method: str = "",
    path: str = "",
    query: str | Iterable[tuple[str, str]] = "",
    window: int = REPLAY_WINDOW_SECONDS,
) -> None:
    """Raise unless the signature is right and fresh. ``signing_key`` None = unknown client.

    v2 needs the request's ``method``, decoded ``path`` and ``query`` (a raw query string, or
    decoded pairs as a web framework parses them)."""
    # An unknown key id still costs one HMAC, so timing does not reveal which ids exist.
    expected = expected_signature(signed, body, signing_key or "0" * 64, method=method, path=path, query=query)
    if not hmac.compare_digest(expected, signed.signature) or signing_key is None:
        raise SignatureInvalid("signature does not match the request", details={"key_id": signed.key_id})
    skew = now - signed.timestamp
    if abs(skew) > window:
        raise TimestampStale(
            f"request timestamp is {int(abs(skew))}s {'old' if skew > 0 else 'in the future'}; the window is {window}s",
            details={"skew_seconds": int(skew), "window_seconds": window},
        )
