"""What an agent hands back besides its exit status: a verification report and structured output.

Both arrive as events (docs/agent_runs.md, "Verification and structured output"); this
module turns one attempt's into the iteration's ``verification`` and ``structured_output``
slots, and says when they fail an attempt whose command exited 0.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jsonschema

from ipai_ops.runs.events import EventSummary
from ipai_ops.runs.secrets import SecretValues
from ipai_ops.runs.spec import RunSetupError
from ipai_ops.text import redact, redact_obj

CODE_VERIFICATION_FAILED = "AGENT.VERIFICATION_FAILED"
CODE_OUTPUT_INVALID = "AGENT.OUTPUT_SCHEMA_INVALID"
#: Structured output larger than this (as JSON, after redaction) is validated but not stored.
MAX_OUTPUT_CHARS = 64 * 1024
MAX_SCHEMA_ERRORS = 20
_MAX_ERROR_CHARS = 500


class OutputSchema:
    """A JSON Schema (draft 2020-12) the agent's structured output must satisfy, checked at setup."""

    def __init__(self, schema: Mapping[str, Any], label: str):
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise RunSetupError(f"output schema {label} is not a valid JSON Schema: {exc.message}") from None
        self.schema = dict(schema)
        self.label = label
        self._validator = jsonschema.Draft202012Validator(self.schema)

    @classmethod
    def load(cls, source: str | os.PathLike[str] | Mapping[str, Any]) -> OutputSchema:
        """From a schema object, or the path of a JSON file holding one."""
        if isinstance(source, Mapping):
            return cls(source, "(given)")
        path = Path(source)
        try:
            schema = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise RunSetupError(f"cannot read the output schema {path}: {exc.strerror}") from None
        except ValueError as exc:
            raise RunSetupError(f"output schema {path} is not JSON: {exc}") from None
        if not isinstance(schema, Mapping):
            raise RunSetupError(f"output schema {path} is not a JSON object")
        return cls(schema, str(path))

    def errors(self, data: Any) -> list[str]:
        """Every violation, ``at /json/pointer: message``, in document order (at most 20)."""
        found = sorted(self._validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
        out = []
        for error in found[:MAX_SCHEMA_ERRORS]:
            where = "/" + "/".join(str(p) for p in error.absolute_path)
            out.append(f"at {where}: {error.message}"[:_MAX_ERROR_CHARS])
        return out


def verification_report(summary: EventSummary, attempt: int) -> dict[str, Any] | None:
    """The attempt's ``verification`` slot: which checks ran, which failed, their evidence."""
    if not summary.check_count:
        return None
    failed = summary.checks_failed
    return {
        "attempt": attempt,
        "status": "failed" if failed else "passed",
        "total": summary.check_count,
        "passed": summary.check_count - failed,
        "failed": failed,
        "failed_checks": [c["name"] for c in summary.checks if not c["ok"]],
        "checks": summary.checks,
    }


def structured_output(
    summary: EventSummary, schema: OutputSchema | None, attempt: int, secrets: SecretValues
) -> dict[str, Any] | None:
    """The attempt's ``structured_output`` slot: the data (redacted), and whether it validates."""
    if not summary.has_output and schema is None:
        return None
    slot: dict[str, Any] = {
        "attempt": attempt,
        "present": summary.has_output,
        "schema": schema.label if schema else None,
        "valid": None,
        "errors": [],
        "data": None,
    }
    if schema is not None:
        if summary.has_output:
            # Messages quote the offending values: they go through the redactor like the data.
            slot["errors"] = [secrets.mask(redact(e) or e) for e in schema.errors(summary.output)]
        else:
            slot["errors"] = ["no output event: the agent returned no structured output"]
        slot["valid"] = not slot["errors"]
    if summary.has_output:
        data = secrets.mask_obj(redact_obj(summary.output))
        size = len(json.dumps(data, default=str))
        if size > MAX_OUTPUT_CHARS:
            slot.update(truncated=True, chars=size)
        else:
            slot["data"] = data
    return slot


class Verdict(NamedTuple):
    """Why an attempt whose command exited 0 failed all the same."""

    code: str
    error_type: str
    #: ``typed_by`` of the iteration.
    reason: str
    message: str


def verdict(verification: dict[str, Any] | None, output: dict[str, Any] | None) -> Verdict | None:
    """The verdict when these fail an attempt whose command exited 0, else None.

    A failed verification comes first: the change itself was rejected.
    """
    if verification and verification["status"] == "failed":
        names = ", ".join(verification["failed_checks"][:5])
        more = ", ..." if len(verification["failed_checks"]) > 5 else ""
        return Verdict(
            CODE_VERIFICATION_FAILED,
            "run.verification_failed",
            "verification",
            f"verification stage failed: {verification['failed']} of {verification['total']} checks failed "
            f"({names}{more})",
        )
    if output and output["valid"] is False:
        return Verdict(
            CODE_OUTPUT_INVALID,
            "run.output_schema_invalid",
            "output_schema",
            f"structured output did not validate against {output['schema']}: {output['errors'][0]}",
        )
    return None
