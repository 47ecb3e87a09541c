"""Grouping version 1: the classifier every group recorded before grouping version 2 was keyed by.

A fingerprint covers the failure code, so a better classifier changes the fingerprint of
failures it now types differently. To keep those groups (their history, status, assignee,
resolution) the writers attach a new key to the group the old key names, during an upgrade
window (``ops.grouping_versions.legacy_until``; docs/architecture.md, "Grouping versions").
That needs the old key, hence the old code: this module is the version-1 algorithm, frozen,
over the version-1 signatures (``legacy_v1.json``, taken from the registry this algorithm
shipped with), the way error trackers keep their previous grouping strategies for a
transition period.

Version 1, in order: an explicit code (or alias; deprecated codes resolve to their
replacement); ``on: type`` signatures over the type; ``on: message`` over the message;
``on: text`` over message and text joined by a newline; first match in registry file order
in each tier; else the fallback. Subjects capped at 64 KiB (text 128 KiB). The patterns run
with RE2, as every registry pattern does now.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import re2

from ipai_ops.registry import inline_flags
from ipai_ops.text import re2_options

GROUPING_VERSION = 1
_MAX_CHARS = 64 * 1024
_SNAPSHOT = Path(__file__).with_name("legacy_v1.json")


class _Version1:
    def __init__(self, data: dict[str, Any]) -> None:
        self.fallback: str = data["fallback"]
        self.aliases: dict[str, str] = data["aliases"]
        self.deprecated: dict[str, str | None] = data["deprecated"]
        self.codes: set[str] = set(data["codes"])
        self.tiers: dict[str, tuple[list[tuple[str, str, list[str]]], Any]] = {}
        for tier in ("type", "message", "text"):
            signatures: list[tuple[str, str, list[str]]] = []
            options = re2_options()
            options.max_mem = 64 << 20
            patterns = re2.Set.SearchSet(options)
            for code, on, pattern, flags in data["signatures"]:
                if on == tier:
                    patterns.Add(inline_flags(pattern, flags).encode("utf-8"))
                    signatures.append((code, pattern, flags))
            patterns.Compile()
            self.tiers[tier] = (signatures, patterns)

    def explicit(self, code: str | None) -> str | None:
        if not code:
            return None
        code = code.strip()
        if code in self.codes:
            return code
        if code in self.aliases:
            return self.aliases[code]
        replacement = self.deprecated.get(code)
        return replacement if replacement else None

    def classify(self, error_type: str | None, message: str | None, text: str | None) -> tuple[str, Any]:
        subjects = {
            "type": (error_type or "")[:_MAX_CHARS],
            "message": (message or "")[:_MAX_CHARS],
            "text": "\n".join(p for p in (message, text) if p)[: _MAX_CHARS * 2],
        }
        for tier in ("type", "message", "text"):
            subject = subjects[tier]
            if not subject:
                continue
            signatures, patterns = self.tiers[tier]
            found = patterns.Match(subject.encode("utf-8", "surrogatepass")) if signatures else None
            if found:
                code, pattern, flags = signatures[min(found)]
                return code, _compiled(inline_flags(pattern, flags))
        return self.fallback, None


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> Any:
    return re2.compile(pattern, re2_options())


@lru_cache(maxsize=1)
def _version1() -> _Version1:
    return _Version1(json.loads(_SNAPSHOT.read_text(encoding="utf-8")))


def classify_v1(
    *,
    explicit_code: str | None = None,
    error_type: str | None = None,
    message: str | None = None,
    text: str | None = None,
) -> str:
    """The code grouping version 1 gave this error."""
    return classify_v1_signature(explicit_code=explicit_code, error_type=error_type, message=message, text=text)[0]


def classify_v1_signature(
    *,
    explicit_code: str | None = None,
    error_type: str | None = None,
    message: str | None = None,
    text: str | None = None,
) -> tuple[str, Any]:
    """The code grouping version 1 gave this error, and its deciding pattern (RE2, for
    ``str``) when a signature decided: the writers that picked the message out of a log
    with that pattern (the GitHub Actions ingest, ``ipai-ops run``) pick the same line."""
    version1 = _version1()
    explicit = version1.explicit(explicit_code)
    if explicit:
        return explicit, None
    return version1.classify(error_type, message, text)
