"""Fingerprints: one stable id per *kind* of error, across processes, hosts and releases.

Grouping is versioned (bugsink/Sentry practice): the fingerprint carries the
algorithm version, ``fp1:<hex>``, so a future change of algorithm never merges
or splits old groups silently.

Inputs: failure code, exception type, the *normalised* message (numbers, UUIDs,
hex ids, timestamps, paths, e-mail addresses, URLs' hosts and quoted values
replaced by placeholders) and the top in-app frames (function + module, never
line numbers, which move with every release).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from functools import lru_cache

FINGERPRINT_VERSION = 1
PREFIX = f"fp{FINGERPRINT_VERSION}:"
MAX_FRAMES = 5
_MAX_MESSAGE = 4096

# Order matters: specific shapes first, so a UUID is not eaten as numbers, a
# timestamp not as a path, and so on.
_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"-----BEGIN [A-Z ]+-----.*?-----END [A-Z ]+-----", re.S), "<pem>"),
    (re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s'\"<>]+", re.I), "<url>"),
    (re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"), "<email>"),
    (
        re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I),
        "<uuid>",
    ),
    (
        re.compile(r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?\b"),
        "<ts>",
    ),
    (re.compile(r"\b\d{4}-\d{2}-\d{2}\b"), "<date>"),
    (re.compile(r"\b\d{2}:\d{2}:\d{2}(?:[.,]\d+)?\b"), "<time>"),
    (re.compile(r"\b0x[0-9a-f]+\b", re.I), "<hex>"),
    (re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{8,}\b", re.I), "<hex>"),
    (re.compile(r"\b\d+(?:\.\d+){3}(?::\d+)?\b"), "<ip>"),
    (re.compile(r"(?:[A-Za-z]:)?(?:[\\/][\w.@+-]+){2,}[\\/]?"), "<path>"),
    (re.compile(r"'[^'\n]{0,200}'"), "'<str>'"),
    (re.compile(r'"[^"\n]{0,200}"'), '"<str>"'),
    (re.compile(r"(?<![A-Za-z_])[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?"), "<n>"),
)
_SPACE_RE = re.compile(r"\s+")


_HEX8 = re.compile(r"[0-9a-fA-F]{8}")
_DIGIT = re.compile(r"\d")

#: A necessary condition of each rule (a match needs it): a rule whose condition fails on
#: the text cannot match and is skipped. The output is the same; most messages skip most
#: rules, and each rule is a case-insensitive, ``\b``-anchored scan that costs ~0.1 us per
#: character in Python's ``re`` (tests/core/test_fingerprint.py checks the equivalence).
_CONDITIONS: tuple = (
    lambda t: "-----BEGIN" in t,
    lambda t: "://" in t,
    lambda t: "@" in t,
    lambda t: t.count("-") >= 4 and _HEX8.search(t) is not None,
    lambda t: t.count("-") >= 2 and ":" in t,
    lambda t: t.count("-") >= 2,
    lambda t: t.count(":") >= 2,
    lambda t: "0x" in t or "0X" in t,
    lambda t: _HEX8.search(t) is not None,
    lambda t: t.count(".") >= 3,
    lambda t: t.count("/") + t.count("\\") >= 2,
    lambda t: "'" in t,
    lambda t: '"' in t,
    lambda t: _DIGIT.search(t) is not None,
)


def normalize_message(message: str | None) -> str:
    """The message with its variable parts replaced; equal for two instances of one error."""
    if not message:
        return ""
    text = message[:_MAX_MESSAGE]
    for (pattern, placeholder), condition in zip(_RULES, _CONDITIONS, strict=True):
        if condition(text):
            text = pattern.sub(placeholder, text)
    return _SPACE_RE.sub(" ", text).strip()


@lru_cache(maxsize=65536)
def _normalized_frame(frame: str) -> str:
    return normalize_frame(frame)


def normalize_frame(frame: str) -> str:
    """``module:function`` without line numbers or addresses."""
    frame = re.sub(r"(?:,\s*)?\bline \d+", "", frame)
    frame = re.sub(r":\d+(?=$|\s|:|\))", "", frame)
    frame = re.sub(r"\b0x[0-9a-f]+\b", "<hex>", frame, flags=re.I)
    return _SPACE_RE.sub(" ", frame).strip()


def fingerprint(
    *,
    code: str,
    error_type: str | None = None,
    message: str | None = None,
    frames: Sequence[str] = (),
    normalized_message: str | None = None,
) -> str:
    """``fp1:<32 hex>`` over code, type, normalised message and up to 5 in-app frames.

    ``normalized_message``: ``normalize_message(message)`` when the caller already has it.
    """
    parts = [
        f"v{FINGERPRINT_VERSION}",
        code,
        (error_type or "").strip(),
        normalize_message(message) if normalized_message is None else normalized_message,
        *(_normalized_frame(f) for f in list(frames)[:MAX_FRAMES]),
    ]
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8", "surrogatepass")).hexdigest()
    return PREFIX + digest[:32]


def frames_from_stacktrace(
    stacktrace: str | None,
    *,
    in_app: Sequence[str] = (),
    keep: Callable[[str], bool] | None = None,
) -> list[str]:
    """Top-most-last frames of a Python traceback text as ``module_file:function``.

    ``in_app`` path fragments (e.g. ``addons/``, ``ipai_ops/``) keep only the
    application's own frames; library frames move between releases of the library.
    ``keep(path)``: a further rule a frame's file must pass (producers use
    :func:`ipai_ops.record.is_app_path`, the one in-app rule).
    """
    if not stacktrace:
        return []
    frames = []
    for path, func in _FRAME_RE.findall(stacktrace):
        if in_app and not any(fragment in path for fragment in in_app):
            continue
        if keep is not None and not keep(path):
            continue
        stem = _stem(path) if len(path) <= 512 else _STEM_RE.sub(r"\1", path.replace("\\", "/"))
        frames.append(f"{stem}:{func}")
    return list(reversed(frames))[:MAX_FRAMES]


_FRAME_RE = re.compile(r'File "([^"]+)", line \d+, in (\S+)')
_STEM_RE = re.compile(r"^.*?((?:[\w-]+/){0,2}[\w-]+)\.py$")


@lru_cache(maxsize=16384)
def _stem(path: str) -> str:
    """``a/b/c`` of ``/srv/x/a/b/c.py``: the last two folders and the module (paths repeat;
    only short ones are cached, so the cache stays small whatever a sender writes)."""
    return _STEM_RE.sub(r"\1", path.replace("\\", "/"))
