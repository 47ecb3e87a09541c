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

import threading
from collections import OrderedDict
from dataclasses import replace
from typing import Any

from ipai_ops.classify import legacy, matching, reading
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
) -> Classification:
    """Classify one error: explicit code, else signatures over type, message and text, else fallback.

    ``text`` is any log or output text (read with :func:`reading.read_text`, NUL bytes
    blanked); ``log`` is an already read :class:`Log` (the CLI streams files into one).
    """
    previous = legacy.classify_v1(
        explicit_code=explicit_code,
        error_type=error_type,
        message=message,
        text=text if text is not None or log is None else log.data.decode("utf-8", "replace"),
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
    return replace(_shape_cached(registry, error_type, message, log), previous_code=previous)


def classify_log(registry: Registry, log: Log, *, message: str | None = None) -> Classification:
    """Classify a log read with :func:`read_file` / :func:`read_stream` / :func:`read_text`."""
    return classify(registry, message=message, log=log)


def _read_lenient(text: str) -> Log:
    """A library caller's text (a stack trace, a log body): NUL bytes are blanked, not refused."""
    if "\x00" in text[:8192]:
        text = text.replace("\x00", " ")
    return read_text(text)


def _classify(registry: Registry, error_type: str | None, message: str | None, log: Log | None) -> Classification:
    engine = matching.matcher_for(registry)
    candidates = engine.candidates(error_type=error_type, message=message, log=log)
    winner, others = engine.decide(candidates, log)
    if winner is None:
        return _fallback(registry, log, message)
    return matching.build(registry, winner, others, candidates, log, message=message, error_type=error_type)


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


def _shape_cached(registry: Registry, error_type: str | None, message: str | None, log: Log | None) -> Classification:
    """Classify, reusing the decision made for an earlier error of the same *shape*.

    The shape is the message and text with numbers, ids, quoted values and paths replaced
    (:func:`ipai_ops.fingerprint.normalize_message`): a storm of ``order 123 missing``,
    ``order 456 missing`` is decided once. A hit is used only when the same signatures
    match the new text (one RE2 set scan per subject), since a signature may read what the
    shape hides (``KeyError: 'OPENAI_API_KEY'`` and ``KeyError: 'name'`` share a shape);
    the evidence and captures are then read from the new text.
    """
    size = len(message or "") + (len(log.data) if log is not None else 0)
    if size > _SHAPE_MAX_CHARS or (log is not None and log.markers):
        return _classify(registry, error_type, message, log)
    from ipai_ops.fingerprint import normalize_message

    key = (
        error_type,
        normalize_message(message) if message else None,
        normalize_message(log.data.decode("utf-8", "replace")) if log is not None else None,
    )
    engine = matching.matcher_for(registry)
    cache: OrderedDict[Any, Any] = registry.derived.setdefault("shape_cache", OrderedDict())
    matched = _matched_set(engine, error_type, message, log)
    with _shape_lock:
        hit = cache.get(key)
        if hit is not None:
            cache.move_to_end(key)
    if hit is not None and hit[0] == matched:
        winner_code = hit[1]
        if winner_code is None:
            return _fallback(registry, log, message)
        candidates = [
            c
            for c in engine.candidates(error_type=error_type, message=message, log=log)
            if c.sig.mode.code == winner_code or c.sig.mode.code in hit[2]
        ]
        winner, others = engine.decide(candidates, log)
        if winner is not None and winner.sig.mode.code == winner_code:
            return matching.build(registry, winner, others, candidates, log, message=message, error_type=error_type)
    result = _classify(registry, error_type, message, log)
    entry = (matched, None if result.is_fallback else result.code, frozenset(result.also))
    with _shape_lock:
        cache[key] = entry
        cache.move_to_end(key)
        while len(cache) > _SHAPE_CACHE_SIZE:
            cache.popitem(last=False)
    return result


def _matched_set(engine: matching.Matcher, error_type: str | None, message: str | None, log: Log | None) -> frozenset:
    found: set[int] = set()
    sets = engine.sets
    if error_type:
        found.update(s.index for s in sets["type"].match(error_type.encode("utf-8", "surrogatepass")))
    for data in (message.encode("utf-8", "surrogatepass") if message else None, log.data if log is not None else None):
        if not data:
            continue
        types = reading.exception_types(data)
        if types:
            found.update(s.index for s in sets["type"].match(b"\n".join(t for _, t in types)))
        found.update(s.index for s in sets["message"].match(data))
        found.update(s.index for s in sets["text"].match(data))
    return frozenset(found)


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
