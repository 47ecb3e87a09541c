"""What a classification answers: the code, how it was decided, and the evidence."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ipai_ops.registry import FailureMode

#: At most this many evidence lines, and this many characters of each.
MAX_EVIDENCE_LINES = 8
MAX_EVIDENCE_CHARS = 300
#: At most this many values per capture, and this many characters of each.
MAX_CAPTURE_VALUES = 20
MAX_CAPTURE_CHARS = 200


@dataclass(frozen=True)
class EvidenceLine:
    """One line that decided a classification: its original line number (``None`` for a
    message or type given on its own), its text, and why it is there."""

    line: int | None
    text: str
    #: ``signature`` (a registry signature matched it), ``marker`` (where the CI system or the
    #: build tool says the command failed), ``command`` (the failed command the code was
    #: read from), ``context`` (a line around the deciding one), ``passed`` (where the CI system
    #: says the whole job passed: the fallback's reason), ``message``/``type`` (the error's own
    #: message or type).
    role: str = "signature"

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.line, "text": self.text, "role": self.role}


@dataclass(frozen=True)
class Classification:
    code: str
    mode: FailureMode
    #: ``explicit``, ``signature``, ``command`` (read from the failed command alone), ``model``
    #: (the learned layer, where no signature matched) or ``fallback``.
    matched_by: str
    #: ``on:pattern`` of the deciding signature, or the explicit code given.
    signature: str | None = None
    evidence: tuple[EvidenceLine, ...] = ()
    #: Structured fields read from the text (failing tests, file and line, package, variable, ...).
    captures: dict[str, Any] = field(default_factory=dict, compare=False)
    #: Other codes whose signatures matched too, best first (what the winner was preferred to).
    also: tuple[str, ...] = ()
    #: The deciding line's text (or the message's first line): what a person reads first.
    headline: str | None = None
    #: With ``matched_by == "model"``: the model's probability and the nearest labelled example
    #: (``{"score": 0.93, "nearest": {"source": ..., "text": ...}}``).
    model: dict[str, Any] | None = field(default=None, compare=False)
    #: The code grouping version 1 gave the same input (:mod:`ipai_ops.classify.legacy`):
    #: the writers use it to find the group a failure had before this classifier.
    previous_code: str | None = field(default=None, compare=False)
    #: What grouping version 1 reads (explicit code, type, message, text) when the code it gave
    #: is worked out only if asked (:meth:`grouping_v1_code`): most callers never ask.
    legacy_inputs: tuple[str | None, str | None, str | None, str | None] | None = field(
        default=None, compare=False, repr=False
    )

    def grouping_v1_code(self) -> str | None:
        """The code grouping version 1 gave this input (``previous_code``, or worked out from
        ``legacy_inputs``); the writers use it during the upgrade window."""
        if self.previous_code is not None or self.legacy_inputs is None:
            return self.previous_code
        from ipai_ops.classify import legacy

        explicit_code, error_type, message, text = self.legacy_inputs
        return legacy.classify_v1(explicit_code=explicit_code, error_type=error_type, message=message, text=text)

    @property
    def is_fallback(self) -> bool:
        return self.matched_by == "fallback"

    @property
    def family(self) -> str:
        return self.mode.family

    def evidence_dict(self) -> dict[str, Any]:
        """The ``evidence.classification`` block of a failure envelope (schema v1.1)."""
        out: dict[str, Any] = {
            "code": self.code,
            "family": self.family,
            "matched_by": self.matched_by,
            "signature": self.signature,
            "lines": [e.as_dict() for e in self.evidence],
            "captures": dict(self.captures),
        }
        if self.headline:
            out["headline"] = self.headline
        if self.also:
            out["also"] = list(self.also)
        if self.model:
            out["model"] = self.model
        return out
