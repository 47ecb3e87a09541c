"""Who may write as whom: senders, their tokens and the sources each may write.

A *sender* is a name with one or more bearer tokens (several during a rotation) and the
``ipai.source`` values it may write (docs/bridge.md, "Senders and sources"):

* a source named in a sender's grant is **owned** by it: no other sender may name it
  (checked at start), so its occurrence ids and fingerprints are used as sent (a producer
  that also writes to ops directly, like Odoo or ``ipai_ops.sdk``, meets its own
  keys and groups);
* ``*`` grants every source that is neither reserved nor owned by another sender. Where
  two or more senders hold ``*``, such a source is **shared**: an occurrence id written
  under it is prefixed with the sender's name (``<sender>/<id>``) and a fingerprint the
  sender supplied is replaced by one derived from the sender's name and it, so one sender
  can neither collide with another's ids nor attach occurrences to another's groups by
  naming their fingerprint;
* the reserved sources (:data:`RESERVED`: the writers of ops that do not use OTLP, and
  Odoo) are refused unless named in the grant.

Configuration: ``IPAI_BRIDGE_TOKENS`` (or a file, ``IPAI_BRIDGE_TOKENS_FILE``), one
sender per line or ``;``: ``<name>:<source>[,<source>...]:<token>``. The single shared
``IPAI_BRIDGE_TOKEN`` is the sender ``shared``, with the sources of
``IPAI_BRIDGE_TOKEN_SOURCES`` (default ``*``); without any token every request is the
sender ``anonymous`` with those sources.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc

from ipai_ops.bridge.otlp import OtlpRejected

#: Sources written by the project's own non-OTLP writers (Odoo's direct writes, CI ingest,
#: ``ipai-ops run``): over OTLP only for a sender whose grant names them.
RESERVED = frozenset({"odoo", "github_actions", "agent_run"})
WILDCARD = "*"
SHARED_SENDER = "shared"
ANONYMOUS_SENDER = "anonymous"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
#: A source as the extractor keeps it (``MAX_SOURCE_CHARS``), no separators of the syntax.
_SOURCE_RE = re.compile(r"^[^\s,:;]{1,64}$")
#: Shortest token accepted in IPAI_BRIDGE_TOKENS (a guessable token is no authentication).
MIN_TOKEN_CHARS = 16


class SenderConfigError(ValueError):
    """IPAI_BRIDGE_TOKENS (or its file) cannot be used; the message is one line, without tokens."""


@dataclass(frozen=True)
class Sender:
    name: str
    #: Sources named in the grant (owned: no other sender names them).
    sources: frozenset[str]
    #: ``*`` in the grant: any source neither reserved nor owned by another sender.
    wildcard: bool
    tokens: tuple[bytes, ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class Decision:
    """What one occurrence's source means for its sender."""

    allowed: bool
    #: The source is shared with other ``*`` senders: ids and supplied fingerprints are namespaced.
    shared: bool = False
    reason: str = ""


def parse_grant(text: str, *, where: str) -> tuple[frozenset[str], bool]:
    sources = [part.strip() for part in text.split(",") if part.strip()]
    if not sources:
        raise SenderConfigError(f"{where}: no source (use * for any non-reserved source)")
    for source in sources:
        if source != WILDCARD and not _SOURCE_RE.match(source):
            raise SenderConfigError(f"{where}: {source[:70]!r} is not a source (1-64 characters, no , : ; or space)")
    return frozenset(s for s in sources if s != WILDCARD), WILDCARD in sources


def parse_senders(text: str, *, origin: str = "IPAI_BRIDGE_TOKENS") -> list[Sender]:
    """``<name>:<source>[,<source>...]:<token>`` per line or ``;`` (``#`` starts a comment line).

    A name may appear on several entries (one per token, during a rotation) with the same grant.
    """
    by_name: dict[str, Sender] = {}
    entries = [line.strip() for chunk in text.splitlines() for line in chunk.split(";")]
    for number, entry in enumerate(entries, 1):
        if not entry or entry.startswith("#"):
            continue
        where = f"{origin} entry {number}"
        name, sep1, rest = entry.partition(":")
        grant, sep2, token = rest.partition(":")
        name, token = name.strip(), token.strip()
        if not (sep1 and sep2):
            raise SenderConfigError(f"{where}: expected <name>:<source>[,<source>...]:<token>")
        if not _NAME_RE.match(name):
            raise SenderConfigError(f"{where}: sender name {name[:70]!r} must be letters, digits, _ . - (1-64)")
        if name in (SHARED_SENDER, ANONYMOUS_SENDER):
            raise SenderConfigError(f"{where}: the sender name {name!r} is reserved for IPAI_BRIDGE_TOKEN / no token")
        if len(token) < MIN_TOKEN_CHARS:
            raise SenderConfigError(f"{where} ({name}): the token must have at least {MIN_TOKEN_CHARS} characters")
        sources, wildcard = parse_grant(grant, where=f"{where} ({name})")
        previous = by_name.get(name)
        if previous is not None and (previous.sources, previous.wildcard) != (sources, wildcard):
            raise SenderConfigError(f"{where}: sender {name!r} is listed twice with different sources")
        tokens = (*(previous.tokens if previous else ()), token.encode())
        by_name[name] = Sender(name, sources, wildcard, tokens)
    return list(by_name.values())


class Senders:
    """The configured senders; :meth:`authenticate` maps an ``Authorization`` header to one."""

    def __init__(self, senders: Iterable[Sender]) -> None:
        self.senders = list(senders)
        owners: dict[str, str] = {}
        seen_tokens: dict[bytes, str] = {}
        for sender in self.senders:
            for source in sorted(sender.sources):
                if source in owners and owners[source] != sender.name:
                    raise SenderConfigError(
                        f"source {source!r} is granted to both {owners[source]!r} and {sender.name!r}: a named "
                        "source belongs to one sender (use * for sources several senders write)"
                    )
                owners[source] = sender.name
            for token in sender.tokens:
                if token in seen_tokens and seen_tokens[token] != sender.name:
                    raise SenderConfigError(f"senders {seen_tokens[token]!r} and {sender.name!r} share a token")
                seen_tokens[token] = sender.name
        self.owners = owners
        self.wildcard_senders = sum(1 for s in self.senders if s.wildcard)
        self.requires_token = any(s.tokens for s in self.senders)
        self._anonymous = next((s for s in self.senders if not s.tokens), None)

    @classmethod
    def from_settings(cls, settings: Any) -> Senders:
        """IPAI_BRIDGE_TOKEN (sender ``shared``), IPAI_BRIDGE_TOKENS and IPAI_BRIDGE_TOKENS_FILE;
        without any token, one ``anonymous`` sender (both with IPAI_BRIDGE_TOKEN_SOURCES)."""
        senders = parse_senders(settings.tokens)
        if settings.tokens_file:
            try:
                with open(settings.tokens_file, encoding="utf-8") as handle:
                    text = handle.read()
            except OSError as exc:
                raise SenderConfigError(f"IPAI_BRIDGE_TOKENS_FILE {settings.tokens_file}: {exc.strerror}") from None
            senders += parse_senders(text, origin=f"IPAI_BRIDGE_TOKENS_FILE {settings.tokens_file}")
            names = [s.name for s in senders]
            duplicated = sorted({n for n in names if names.count(n) > 1})
            if duplicated:
                raise SenderConfigError(f"sender {duplicated[0]!r} is in both IPAI_BRIDGE_TOKENS and its file")
        sources, wildcard = parse_grant(settings.token_sources, where="IPAI_BRIDGE_TOKEN_SOURCES")
        if settings.token:
            senders.append(Sender(SHARED_SENDER, sources, wildcard, (settings.token.encode(),)))
        elif not senders:
            senders.append(Sender(ANONYMOUS_SENDER, sources, wildcard))
        return cls(senders)

    def authenticate(self, header: str | None) -> Sender:
        """The sender whose token the ``Authorization`` header presents (``Bearer`` in any case);
        every configured token is compared, in constant time, whatever matches."""
        if not self.requires_token:
            assert self._anonymous is not None
            return self._anonymous
        # RFC 9110 11.1: the scheme is case-insensitive; one or more spaces before the token.
        scheme, _, credentials = (header or "").strip().partition(" ")
        presented = credentials.lstrip(" ").encode("utf-8", "surrogateescape")
        found = None
        for sender in self.senders:
            for token in sender.tokens:
                if hmac.compare_digest(presented, token) and found is None:
                    found = sender
        if scheme.lower() != "bearer" or found is None:
            raise OtlpRejected(401, grpc.StatusCode.UNAUTHENTICATED, "unauthenticated", "missing or wrong bearer token")
        return found

    def decide(self, sender: Sender, source: str) -> Decision:
        if source in sender.sources:
            return Decision(True)
        if source in RESERVED:
            return Decision(False, reason=f"source {source!r} is reserved; sender {sender.name!r} may not write it")
        owner = self.owners.get(source)
        if owner is not None:
            return Decision(False, reason=f"source {source!r} belongs to sender {owner!r}, not {sender.name!r}")
        if not sender.wildcard:
            return Decision(False, reason=f"sender {sender.name!r} may not write source {source!r}")
        return Decision(True, shared=self.wildcard_senders > 1)


def namespaced_id(sender: Sender, occurrence_id: str, limit: int = 512) -> str:
    return f"{sender.name}/{occurrence_id}"[:limit]


def namespaced_fingerprint(sender: Sender, fingerprint: str) -> str:
    """A supplied fingerprint of a shared source, in the sender's own namespace: it can equal
    neither a computed ``fp1:`` fingerprint nor another sender's."""
    digest = hashlib.sha256(f"{sender.name}\x1f{fingerprint}".encode("utf-8", "surrogatepass")).hexdigest()
    return f"fpx:{sender.name}:{digest[:32]}"
