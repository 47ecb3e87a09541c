"""Classification: an error (explicit code, exception type, message, log text) -> failure code.

The subsystem (docs/architecture.md, "Classification"):

* :mod:`~ipai_ops.classify.reading` reads a log like an engineer: normalised (ANSI,
  progress bars, timestamps, CI prefixes) with its original line numbers, the failure
  markers and steps, the failure region; any size, tail kept;
* :mod:`~ipai_ops.classify.matching` compiles the registry into RE2 sets (linear time, cost
  independent of the number of codes) and decides by specificity on a line and root cause
  across lines (``ssot/errors/error_codes.md``, "Precedence");
* :mod:`~ipai_ops.classify.model` is the learned layer for what the signatures miss
  (``ipai-ops classify train``), asked only where no signature matched;
* :mod:`~ipai_ops.classify.evaluate` measures it on labelled corpora (``ipai-ops classify eval``).

Precedence: an explicit code the registry knows (an ``ipai.failure.code``, an envelope's
``error.code``, a legacy alias) wins; then signatures; then the model, above its threshold;
then the registry's fallback code.
Every answer carries its evidence: the deciding lines (line numbers of the original text)
and captures (failing tests, file and line, package, variable, exit code, ...).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ipai_ops import config
from ipai_ops.classify import matching
from ipai_ops.classify.reading import Log, LogUnreadable, read_file, read_stream, read_text
from ipai_ops.classify.result import MAX_EVIDENCE_CHARS, MAX_EVIDENCE_LINES, Classification, EvidenceLine
from ipai_ops.registry import Registry

if TYPE_CHECKING:
    from ipai_ops.classify.model import Model

__all__ = [
    "MAX_CLASSIFY_CHARS",
    "Classification",
    "EvidenceLine",
    "Log",
    "LogUnreadable",
    "classify",
    "classify_exception",
    "classify_log",
    "model_generation",
    "qualified_type",
    "read_file",
    "read_stream",
    "read_text",
]

#: A message (or an error type) is read up to this many characters: bounded work per error.
#: A log text is read up to ``reading.MAX_LOG_BYTES`` (its head and its tail).
MAX_CLASSIFY_CHARS = 64 * 1024
#: ``classify(model=ACTIVE)``: ask the active model artifact, if there is one.
ACTIVE = "active"


def classify(
    registry: Registry,
    *,
    explicit_code: str | None = None,
    error_type: str | None = None,
    message: str | None = None,
    text: str | None = None,
    log: Log | None = None,
    model: Model | str | None = ACTIVE,
) -> Classification:
    """Classify one error: explicit code, else signatures over type, message and text, else
    the learned model (above its threshold), else fallback.

    ``text`` is any log or output text (read with :func:`reading.read_text`, NUL bytes
    blanked); ``log`` is an already read :class:`Log` (the CLI streams files into one).
    ``model`` is the learned layer asked where no signature matched: by default the active
    artifact (:func:`model.active_model`, none on a fresh checkout), None for signatures only.

    Every call decides from scratch: for one error, verifying a cached decision costs what
    deciding does (the set scans are most of both; benchmarks/classify_speed.py). Storms
    are met where they arrive: the OTLP bridge keeps one decision per error shape
    (:mod:`ipai_ops.bridge.extract`) and skips the envelope work as well.
    """
    # What grouping version 1 reads, for the code it gave the same input (the writers' upgrade
    # window), worked out only if a writer asks. A caller that hands over an already read
    # ``log`` sets ``previous_code`` itself if it writes groups.
    legacy_inputs = None if log is not None else (explicit_code, error_type, message, text)
    if explicit_code:
        mode = registry.get(explicit_code)
        if mode is not None:
            if not mode.active and mode.replaced_by:
                mode = registry[mode.replaced_by]
            return Classification(mode.code, mode, "explicit", explicit_code, legacy_inputs=legacy_inputs)
    error_type = (error_type or "")[:MAX_CLASSIFY_CHARS] or None
    message = (message or "")[:MAX_CLASSIFY_CHARS] or None
    if log is None and text:
        log = _read_lenient(text)
    result = _classify(registry, error_type, message, log, model)
    return replace(result, legacy_inputs=legacy_inputs) if legacy_inputs is not None else result


def classify_log(registry: Registry, log: Log, *, message: str | None = None) -> Classification:
    """Classify a log read with :func:`read_file` / :func:`read_stream` / :func:`read_text`."""
    return classify(registry, message=message, log=log)


def _read_lenient(text: str) -> Log:
    """A library caller's text (a stack trace, a log body): NUL bytes are blanked, not refused."""
    if "\x00" in text[:8192]:
        text = text.replace("\x00", " ")
    return read_text(text)


def _classify(
    registry: Registry, error_type: str | None, message: str | None, log: Log | None, model: Model | str | None = None
) -> Classification:
    """Classify by signatures, else the model, else the fallback (no explicit code)."""
    engine = matching.matcher_for(registry)
    scans = engine.scans(error_type=error_type, message=message, log=log)
    return _decide(registry, engine, scans, error_type=error_type, message=message, log=log, model=model)


#: Error-looking lines of the failure region a fallback answer shows as evidence.
FALLBACK_CONTEXT_LINES = 3


def _fallback(registry: Registry, log: Log | None, message: str | None) -> Classification:
    fallback = registry.fallback
    evidence: list[EvidenceLine] = []
    captures: dict[str, Any] = {}
    if log is not None:
        marker = log.markers[-1] if log.markers else None
        if marker is not None:
            evidence.append(EvidenceLine(log.number(marker.index), log.line(marker.index)[:300], "marker"))
        if log.line_count:
            # No signature decided, so a person decides: show the failure region's
            # error-looking lines nearest where it failed (what they would read first).
            anchor = marker.index if marker is not None else log.line_count - 1
            for index in sorted(matching.context_lines(log, anchor, exclude=set(), limit=FALLBACK_CONTEXT_LINES)):
                evidence.append(EvidenceLine(log.number(index), log.line(index)[:MAX_EVIDENCE_CHARS], "context"))
            evidence.sort(key=lambda e: e.line or 0)
        if log.exit_code is not None:
            captures["exit_code"] = log.exit_code
        commands = log.failed_commands
        if commands:
            captures["command"] = commands[0]
    return Classification(fallback.code, fallback, "fallback", evidence=tuple(evidence), captures=captures)


def _active_model() -> Model | None:
    """The active artifact. numpy and scikit-learn are imported only once one exists: a
    checkout without a model pays one ``stat`` per unmatched error, nothing more."""
    path = config.model_path()
    if path is None:
        return None
    if "ipai_ops.classify.model" not in sys.modules and not path.exists():
        if os.environ.get(config.IPAI_OPS_MODEL) and str(path) not in _WARNED:
            _WARNED.add(str(path))
            logging.getLogger(__name__).warning("classification model %s not found: signatures only", path)
        return None
    from ipai_ops.classify import model as learned

    return learned.active_model()


_WARNED: set[str] = set()


def model_generation() -> int | None:
    """Which model artifact is active: None (none), else a number that changes each time a
    new artifact is loaded. Caches of decisions (the bridge's templates) follow it."""
    learned = _active_model()
    if learned is None:
        return None
    from ipai_ops.classify import model

    return model.generation()


def _learned(
    registry: Registry,
    model: Model,
    fallback: Classification,
    *,
    error_type: str | None,
    message: str | None,
    log: Log | None,
) -> Classification | None:
    """The model's answer where no signature matched, or None (it abstained)."""
    from ipai_ops.classify.model import looks_like_error, model_lines, model_text

    head = f"{error_type}: {message}" if error_type and message else (message or error_type)
    prediction = model.predict(model_text(message=head, log=log), allowed=_active_codes(registry))
    if prediction is None:
        return None
    mode = registry[prediction.code]
    evidence = [e for e in fallback.evidence if e.role == "marker"]
    if log is not None:
        # the error-looking lines the model read last (else its last line), the marker aside
        markers = {m.index for m in log.markers}
        read = [i for i in model_lines(log) if i not in markers and log.line(i).strip()]
        chosen = [i for i in read if looks_like_error(log.line(i))][-3:] or read[-1:]
        for index in chosen:
            evidence.append(EvidenceLine(log.number(index), log.line(index)[:MAX_EVIDENCE_CHARS], "context"))
    elif head:
        evidence.append(EvidenceLine(None, head.splitlines()[0][:MAX_EVIDENCE_CHARS], "message"))
    evidence.sort(key=lambda e: (e.line is None, e.line or 0))
    return Classification(
        mode.code,
        mode,
        "model",
        evidence=tuple(evidence[:MAX_EVIDENCE_LINES]),
        captures=dict(fallback.captures),
        headline=next((e.text for e in reversed(evidence) if e.role != "marker"), None),
        model=prediction.as_dict(),
    )


def _active_codes(registry: Registry) -> frozenset[str]:
    codes = registry.derived.get("active_codes")
    if codes is None:
        codes = frozenset(m.code for m in registry.active() if not m.fallback)
        registry.derived["active_codes"] = codes
    return codes


def _job_passed(log: Log) -> bool:
    """The CI system says the whole job passed, and no step or job failed after all: what
    the log printed on the way (a retried download, an ``[ERROR]`` of a step allowed to
    fail) is not why anything failed (error_codes.md, "Passing logs")."""
    return log.passed is not None and not any(m.kind in ("step", "job") and m.exit_code != 0 for m in log.markers)


def _passed(registry: Registry, log: Log) -> Classification:
    fallback = registry.fallback
    index = log.passed if log.passed is not None else 0
    evidence = (EvidenceLine(log.number(index), log.line(index)[:300], "passed"),)
    return Classification(fallback.code, fallback, "fallback", evidence=evidence, captures={"exit_code": 0})


def _decide(
    registry: Registry,
    engine: matching.Matcher,
    scans: list[Any],
    *,
    error_type: str | None,
    message: str | None,
    log: Log | None,
    model: Model | str | None = None,
) -> Classification:
    if log is not None and error_type is None and message is None and _job_passed(log):
        return _passed(registry, log)
    candidates = engine.expand(scans, log)
    winner, others = engine.decide(candidates, log)
    if winner is None:
        fallback = _fallback(registry, log, message)
        learned = _active_model() if model == ACTIVE else model
        if learned is not None and not isinstance(learned, str):
            return _learned(registry, learned, fallback, error_type=error_type, message=message, log=log) or fallback
        return fallback
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
