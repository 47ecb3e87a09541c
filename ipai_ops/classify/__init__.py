"""Classification: an error (explicit code, exception type, message, log text) -> failure code.

The subsystem (docs/architecture.md, "Classification"):

* :mod:`~ipai_ops.classify.reading` reads a log like an engineer: normalised (ANSI,
  progress bars, timestamps, CI prefixes) with its original line numbers, the failure
  markers and steps, the failure region; any size, tail kept;
* :mod:`~ipai_ops.classify.matching` compiles the registry into RE2 sets (linear time, cost
  independent of the number of codes) and decides by specificity on a line and root cause
  across lines (``ssot/errors/error_codes.md``, "Precedence");
* :mod:`~ipai_ops.classify.evaluate` measures it on labelled corpora (``ipai-ops classify eval``).

Precedence: an explicit code the registry knows (an ``ipai.failure.code``, an envelope's
``error.code``, a legacy alias) wins; then signatures; then the registry's fallback code.
Every answer carries its evidence: the deciding lines (line numbers of the original text)
and captures (failing tests, file and line, package, variable, exit code, ...).
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import replace
from typing import Any

from ipai_ops.classify import legacy, matching
from ipai_ops.classify.reading import Log, LogUnreadable, read_file, read_stream, read_text
from ipai_ops.classify.result import Classification, EvidenceLine
from ipai_ops.taxonomy import Registry

__all__ = [
    "MAX_CLASSIFY_CHARS",
    "Classification",
    "EvidenceLine",
    "Log",
    "LogUnreadable",
    "classify",
    "classify_exception",
    "classify_log",
    "qualified_type",
    "read_file",
    "read_stream",
    "read_text",
]

#: A message (or an error type) is read up to this many characters: bounded work per error.
#: A log text is read up to ``reading.MAX_LOG_BYTES`` (its head and its tail).
MAX_CLASSIFY_CHARS = 64 * 1024


def classify(
    registry: Registry,
    *,
    explicit_code: str | None = None,
    error_type: str | None = None,
    message: str | None = None,
    text: str | None = None,
    log: Log | None = None,
    shape: Any = None,
) -> Classification:
    """Classify one error: explicit code, else signatures over type, message and text, else fallback.

    ``text`` is any log or output text (read with :func:`reading.read_text`, NUL bytes
    blanked); ``log`` is an already read :class:`Log` (the CLI streams files into one).
    ``shape``: the shape-cache key of the message and text when the caller has computed it
    (the bridge reuses its fingerprint normalisation); hashable.
    """
    # The code grouping version 1 gave the same input (the writers' upgrade window). A caller
    # that hands over an already read ``log`` computes it itself if it writes groups.
    previous = (
        None
        if log is not None
        else legacy.classify_v1(explicit_code=explicit_code, error_type=error_type, message=message, text=text)
    )
    if explicit_code:
        mode = registry.get(explicit_code)
        if mode is not None:
            if not mode.active and mode.replaced_by:
                mode = registry[mode.replaced_by]
            return Classification(mode.code, mode, "explicit", explicit_code, previous_code=previous)
    error_type = (error_type or "")[:MAX_CLASSIFY_CHARS] or None
    message = (message or "")[:MAX_CLASSIFY_CHARS] or None
    if log is None and text:
        log = _read_lenient(text)
    return replace(_shape_cached(registry, error_type, message, log, shape), previous_code=previous)


def classify_log(registry: Registry, log: Log, *, message: str | None = None) -> Classification:
    """Classify a log read with :func:`read_file` / :func:`read_stream` / :func:`read_text`."""
    return classify(registry, message=message, log=log)


def _read_lenient(text: str) -> Log:
    """A library caller's text (a stack trace, a log body): NUL bytes are blanked, not refused."""
    if "\x00" in text[:8192]:
        text = text.replace("\x00", " ")
    return read_text(text)


def _classify(registry: Registry, error_type: str | None, message: str | None, log: Log | None) -> Classification:
    """Classify without the shape cache."""
    engine = matching.matcher_for(registry)
    scans = engine.scans(error_type=error_type, message=message, log=log)
    return _decide(registry, engine, scans, error_type=error_type, message=message, log=log)


def _fallback(registry: Registry, log: Log | None, message: str | None) -> Classification:
    fallback = registry.fallback
    evidence: list[EvidenceLine] = []
    captures: dict[str, Any] = {}
    if log is not None:
        marker = log.markers[-1] if log.markers else None
        if marker is not None:
            evidence.append(EvidenceLine(log.number(marker.index), log.line(marker.index)[:300], "marker"))
        if log.exit_code is not None:
            captures["exit_code"] = log.exit_code
        commands = log.failed_commands
        if commands:
            captures["command"] = commands[0]
    return Classification(fallback.code, fallback, "fallback", evidence=tuple(evidence), captures=captures)


# --------------------------------------------------------------------------- shape cache

_SHAPE_MAX_CHARS = 8192
_SHAPE_CACHE_SIZE = 4096
_shape_lock = threading.Lock()


def _shape_cached(
    registry: Registry, error_type: str | None, message: str | None, log: Log | None, shape: Any = None
) -> Classification:
    """Classify, reusing the decision made for an earlier error of the same *shape*.

    The shape is the message with quoted values, paths and numbers masked and the text with
    its digits, hex ids and quoted values masked (or what the caller passes as ``shape``): a storm of
    ``order 123 missing``, ``order 456 missing`` is decided once. A decision is reused only
    when the set scans (phase 1, always run) find the same signatures in the new text,
    since a signature may read what the shape hides (``KeyError: 'OPENAI_API_KEY'`` and
    ``KeyError: 'name'`` share a shape); then only the deciding codes' signatures are
    searched (phase 2), and evidence and captures are read from the new text.
    """
    engine = matching.matcher_for(registry)
    size = len(message or "") + (len(log.data) if log is not None else 0)
    if size > _SHAPE_MAX_CHARS or (log is not None and log.markers):
        scans = engine.scans(error_type=error_type, message=message, log=log)
        return _decide(registry, engine, scans, error_type=error_type, message=message, log=log)
    if shape is None:
        shape = (
            _SHAPE_RE.sub("#", message) if message else None,
            _masked(log.data) if log is not None else None,
        )
    key = (error_type, shape)
    scans = engine.scans(error_type=error_type, message=message, log=log)
    matched = frozenset().union(*(scan.indexes for scan in scans)) if scans else frozenset()
    cache: OrderedDict[Any, Any] = registry.derived.setdefault("shape_cache", OrderedDict())
    with _shape_lock:
        hit = cache.get(key)
        if hit is not None:
            cache.move_to_end(key)
    if hit is not None and hit[0] == matched:
        winner_code = hit[1]
        if winner_code is None:
            return _fallback(registry, log, message)
        if log is None:
            # One error on its own (no lines to rank): only the winner's signatures are
            # searched again, for its captures; what it was preferred to is the cached list.
            candidates = engine.expand(scans, None, keep=frozenset((winner_code,)))
            winner, _ = engine.decide(candidates, None)
            if winner is not None:
                return matching.build(
                    registry, winner, [], candidates, None, message=message, error_type=error_type, also=hit[3]
                )
        candidates = engine.expand(scans, log, keep=hit[2] | {winner_code})
        winner, others = engine.decide(candidates, log)
        if winner is not None and winner.sig.mode.code == winner_code:
            return matching.build(registry, winner, others, candidates, log, message=message, error_type=error_type)
    result = _decide(registry, engine, scans, error_type=error_type, message=message, log=log)
    entry = (matched, None if result.is_fallback else result.code, frozenset(result.also), result.also)
    with _shape_lock:
        cache[key] = entry
        cache.move_to_end(key)
        while len(cache) > _SHAPE_CACHE_SIZE:
            cache.popitem(last=False)
    return result


#: A message's shape, in one pass: quoted values, paths and numbers (with the hex digits
#: after them) masked. Every branch starts with a quote, a slash or a digit, so ``re`` skips
#: to those characters; a finer key only costs cache hits, never a wrong answer.
_SHAPE_RE = re.compile(r"'[^'\n]{0,200}'|\"[^\"\n]{0,200}\"|[\\/][\w.@+\-\\/]*|\d[0-9a-fA-F]*")
_MASK_RE = re.compile(rb"\d+|'[^'\n]{0,200}'|\"[^\"\n]{0,200}\"|\b[0-9a-fA-F]{8,}\b")


def _masked(data: bytes) -> bytes:
    """A text's shape for the cache key: digits, hex ids and quoted values masked."""
    return _MASK_RE.sub(b"#", data)


def _decide(
    registry: Registry,
    engine: matching.Matcher,
    scans: list[Any],
    *,
    error_type: str | None,
    message: str | None,
    log: Log | None,
) -> Classification:
    candidates = engine.expand(scans, log)
    winner, others = engine.decide(candidates, log)
    if winner is None:
        return _fallback(registry, log, message)
    return matching.build(registry, winner, others, candidates, log, message=message, error_type=error_type)


# --------------------------------------------------------------------------- exceptions


def classify_exception(registry: Registry, exc: BaseException, *, text: str | None = None) -> Classification:
    explicit = getattr(exc, "failure_code", None)
    return classify(
        registry,
        explicit_code=explicit if isinstance(explicit, str) else None,
        error_type=qualified_type(exc),
        message=str(exc),
        text=text,
    )


def qualified_type(exc: BaseException) -> str:
    cls = type(exc)
    module = cls.__module__
    if module in ("builtins", "__main__"):
        return cls.__qualname__
    return f"{module}.{cls.__qualname__}"
