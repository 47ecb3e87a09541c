"""Text helpers below every other layer: secrets redaction, size caps, an error's first line.

Everything that leaves the process (an envelope, a log line, a database error's reason, a
sender's answer) goes through :func:`redact` (API keys, bearer tokens, passwords, the password
of any URL, private keys, random-looking tokens). Nothing here imports another ``ipai_ops``
module, so the store, the registry and classification can all use it
(docs/architecture.md, "Layers").
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping
from typing import Any

import re2


def re2_options() -> re2.Options:
    """RE2 options for our patterns: errors are reported by us, not logged to stderr."""
    options = re2.Options()
    options.log_errors = False
    return options


# --------------------------------------------------------------------------- redaction


class _Re2Sub:
    """An RE2 pattern with ``re``'s ``sub`` signature, over the UTF-8 bytes of the text.

    Bytes, because text decoded with ``surrogateescape`` (a log with invalid UTF-8) holds
    lone surrogates the RE2 wrapper cannot encode; they pass through unchanged.
    """

    def __init__(self, pattern: str):
        self.pattern = re2.compile(pattern.encode(), re2_options())

    def sub(self, replacement: str, text: str) -> str:
        data = text.encode("utf-8", "surrogatepass")
        return self.pattern.sub(replacement.encode(), data).decode("utf-8", "surrogatepass")


_UPPER = bytes(range(65, 91))
_LOWER = bytes(range(97, 123))
_DIGITS = b"0123456789"
_ONE_DIGIT = bytes.maketrans(b"123456789", b"111111111")


class _HighEntropy:
    """Random-looking tokens (API keys, session ids, signatures) that no named rule knows.

    A candidate is a run of 20+ characters of ``[A-Za-z0-9+]`` (found by RE2, linear), with
    ``=`` padding. It is a token when it mixes cases and digits the way random text does and
    reads like no identifier: at least 2 upper- and 2 lower-case letters and a digit, Shannon
    entropy >= 3.5 bits per character, the character class (lower, upper, digit) changing
    between at least 40% of neighbours, and at most 40% of it in word-like runs (``abc``,
    ``Word``). The digits 1-9 are alike to every test: which of them a token holds decides
    nothing. Hex (digests, trace ids, fingerprints) has one case and never matches; ``_``,
    ``-``, ``/`` and ``.`` end a candidate, so snake_case names, paths and run ids are never
    one. On the CI-log corpus every hit is a random id or token; about a third of random
    URL-safe tokens are missed (split at ``-``/``_`` into short parts): this is a backstop
    behind the named rules and the recorder's by-value redaction, not a guarantee.
    """

    PREFILTER = r"[A-Za-z0-9+]{20}"
    MIN_LENGTH = 20
    _CANDIDATE = re2.compile(rb"[A-Za-z0-9+]{20,}=*", re2_options())
    _WORDS = re2.compile(rb"[a-z]{3,}|[A-Z][a-z]{2,}", re2_options())

    @classmethod
    def is_token(cls, token: bytes) -> bool:
        core = token.rstrip(b"=")
        size = len(core)
        if size < cls.MIN_LENGTH:
            return False
        # Counted in C (most candidates are one-case words or hex and stop here).
        upper = size - len(core.translate(None, _UPPER))
        lower = size - len(core.translate(None, _LOWER))
        digits = size - len(core.translate(None, _DIGITS))
        if upper < 2 or lower < 2 or digits < 1:
            return False
        kinds = [0 if 97 <= c <= 122 else 1 if 65 <= c <= 90 else 2 for c in core]
        changes = sum(a != b for a, b in itertools.pairwise(kinds))
        if changes < 0.4 * (size - 1):
            return False
        if sum(len(m) for m in cls._WORDS.findall(core)) > 0.4 * size:
            return False
        # Digits 1-9 count as one symbol: redaction must treat them alike (the bridge's
        # digit-blind template key relies on it), so no value of them decides.
        counts: dict[int, int] = {}
        for c in core.translate(_ONE_DIGIT):
            counts[c] = counts.get(c, 0) + 1
        entropy = -sum(n / size * math.log2(n / size) for n in counts.values())
        return entropy >= 3.5

    def sub(self, replacement: str, text: str) -> str:
        data = text.encode("utf-8", "surrogatepass")
        marker = replacement.encode()
        out, last = [], 0
        for match in self._CANDIDATE.finditer(data):
            if self.is_token(match.group()):
                out += (data[last : match.start()], marker)
                last = match.end()
        if not out:
            return text
        out.append(data[last:])
        return b"".join(out).decode("utf-8", "surrogatepass")


_REDACTIONS: tuple[tuple[str, Any, str], ...] = (
    (
        "private_key",
        re.compile(r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----.*?(?:-----END (?:[A-Z]+ )*PRIVATE KEY-----|$)", re.S),
        "[REDACTED:private_key]",
    ),
    # ``user:password@`` in any URL: an empty user (``redis://:pw@``) too, and a password
    # holding ``@`` up to the last ``@`` before the host. RE2: linear on any text.
    ("dsn", _Re2Sub(r"(?i)\b([a-z][a-z0-9+.-]*://)([^/\s:@]*):[^\s/?#]*@"), r"\1\2:[REDACTED:password]@"),
    ("bearer", re.compile(r"\b(Bearer|Basic|Token)\s+[A-Za-z0-9._~+/=-]{8,}", re.I), r"\1 [REDACTED:token]"),
    ("openai_key", re.compile(r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{16,}"), "[REDACTED:api_key]"),
    ("github_token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})"), "[REDACTED:token]"),
    ("slack_token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"), "[REDACTED:token]"),
    ("aws_key", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), "[REDACTED:aws_key]"),
    ("google_key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"), "[REDACTED:api_key]"),
    # RE2: with re, 60 KB of "eyJaaaa-eyJaaaa-..." cost 0.25 s (each start rescanned the run).
    ("jwt", _Re2Sub(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"), "[REDACTED:jwt]"),
    (
        "assignment",
        re.compile(
            r"""(?ix)
            ((?:password|passwd|pwd|secret|api[_-]?key|access[_-]?key|token|auth|credential|private[_-]?key)[\w.-]{0,64})
            (\s*[=:]\s*|"\s*:\s*"|'\s*:\s*')
            (?!\[REDACTED)("?)([^\s"',;&]{1,512})
            """
        ),
        r"\1\2\3[REDACTED:secret]",
    ),
    ("high_entropy", _HighEntropy(), "[REDACTED:high_entropy]"),
)

#: Keys whose values are replaced wholesale in mappings (case-insensitive substring).
_SECRET_KEYS = re.compile(
    r"password|passwd|secret|api[_-]?key|access[_-]?key|token|authorization|cookie|private[_-]?key|credential",
    re.I,
)
#: ...except numbers under a plural "tokens" key: usage counts (``input_tokens``,
#: ``total_tokens``, ``max_tokens``), the evidence ``tokens`` is for, not credentials.
_COUNT_KEYS = re.compile(r"tokens", re.I)


#: The same secrets in RE2 syntax, each matching wherever its ``_REDACTIONS`` twin does (a
#: prefix of it, or wider): one linear set scan says which patterns can match, and only those
#: run, so the output is that of running every pattern (tests/core/test_envelope.py checks the equivalence);
#: most text holds no secret, and redaction sits on every failure's path.
#: What Python's ``\s`` matches in ``str`` (RE2's ``\s`` is ASCII and lacks ``\v``).
_SPACE = r"[\s\pZ\x0b\x1c-\x1f\x85]"
_PREFILTER_PATTERNS = {
    "private_key": r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----",
    "dsn": r"(?i)\b[a-z][a-z0-9+.-]*://[^/\s:@]*:[^\s/?#]*@",
    "bearer": r"(?i)\b(?:Bearer|Basic|Token)" + _SPACE + r"+[A-Za-z0-9._~+/=-]{8}",
    "openai_key": r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{16}",
    "github_token": r"\b(?:gh[pousr]_[A-Za-z0-9]{20}|github_pat_[A-Za-z0-9_]{20})",
    "slack_token": r"\bxox[abposr]-[A-Za-z0-9-]{10}",
    "aws_key": r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
    "google_key": r"\bAIza[0-9A-Za-z_-]{35}\b",
    "jwt": r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8}",
    # A secret-looking name, then (anywhere later) ``=`` or ``:``: wider than the pattern.
    "assignment": (
        r"(?is)(?:password|passwd|pwd|secret|api[_-]?key|access[_-]?key|token|auth|credential|private[_-]?key)"
        r".*[=:]"
    ),
    "high_entropy": _HighEntropy.PREFILTER,
}


def _prefilter() -> Any:
    options = re2_options()
    patterns = re2.Set.SearchSet(options)
    for kind, _, _ in _REDACTIONS:
        patterns.Add(_PREFILTER_PATTERNS[kind].encode())
    patterns.Compile()
    return patterns


_PREFILTER = _prefilter()


def redact(text: str | None) -> str | None:
    """Replace secrets in free text with ``[REDACTED:<kind>]`` markers."""
    if not text:
        return text
    found = _PREFILTER.Match(text.encode("utf-8", "surrogatepass"))
    if not found:
        return text
    for index in sorted(found):
        _, pattern, replacement = _REDACTIONS[index]
        text = pattern.sub(replacement, text)
    return text


def first_line(error: BaseException | str, default: str | None = None) -> str:
    """The first line of an error's text (libpq and requests messages run to several).

    For a database error the server's own message (``pgerror``) is preferred; an empty
    text gives ``default``, else the exception's type name.
    """
    if isinstance(error, BaseException):
        text = getattr(error, "pgerror", None) or str(error)
        fallback = default or type(error).__name__
    else:
        text, fallback = error, default or "error"
    return (text.strip().splitlines() or [fallback])[0]


def redact_obj(value: Any, *, _depth: int = 0) -> Any:
    """Redact strings anywhere in a JSON-like value; values under secret-looking keys go whole."""
    if _depth > 32:
        return "[TRUNCATED:depth]"
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if (
                isinstance(key, str)
                and _SECRET_KEYS.search(key)
                and isinstance(item, (str, int, float))
                and not (isinstance(item, (int, float)) and _COUNT_KEYS.search(key))
            ):
                out[key] = "[REDACTED:secret]"
            else:
                out[key] = redact_obj(item, _depth=_depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [redact_obj(item, _depth=_depth + 1) for item in value]
    return value


def redacted_first_line(error: BaseException | str, default: str | None = None) -> str:
    """:func:`first_line`, redacted: for a reason that leaves the process (a log line, a
    sender's answer, a database error's message)."""
    line = first_line(error, default)
    return redact(line) or line


# --------------------------------------------------------------------------- caps


def tail(text: str | None, limit: int) -> tuple[str | None, int | None]:
    """The last ``limit`` characters, marked; and the original size when cut."""
    if text is None or len(text) <= limit:
        return text, None
    marker = f"[... {len(text) - limit} chars truncated ...]\n"
    return marker + text[-limit:], len(text)


def head(text: str | None, limit: int) -> tuple[str | None, int | None]:
    if text is None or len(text) <= limit:
        return text, None
    return text[:limit] + f" [... {len(text) - limit} chars truncated]", len(text)
