"""What one run is asked to do: :class:`RunSpec`, the per-run options, checked once.

``RunRecorder.run``, ``record_run`` and the CLI all take these options; they are declared
here only (docs/agent_runs.md, "Python API").
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ipai_ops.runs.outcome import KINDS


class RunSetupError(ValueError):
    """The run cannot start as asked (bad option, run id taken): nothing was executed."""


@dataclass(frozen=True)
class RunSpec:
    """The command and the per-run options of one recorded run.

    ``None`` means "the default": ``agent`` the program's name, ``run_id`` a new one,
    ``cwd`` the current directory, ``env`` this process's environment, ``variant_id``
    ``IPAI_OPS_RUN_VARIANT_ID``, ``max_attempts`` the failure mode's. ``session_id`` is the
    agent session the first attempt resumes (a ``session`` event changes it for the next);
    ``output_schema`` a JSON Schema (object or file path) the agent's structured output must meet.
    """

    argv: Sequence[str]
    agent: str | None = None
    variant_id: str | None = None
    task_ref: str | None = None
    model: str | None = None
    kind: str | None = None
    timeout: float | None = None
    max_attempts: int | None = None
    run_id: str | None = None
    cwd: str | os.PathLike[str] | None = None
    env: Mapping[str, str] | None = field(default=None, repr=False)
    metadata: Mapping[str, Any] | None = None
    session_id: str | None = None
    output_schema: str | os.PathLike[str] | Mapping[str, Any] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        argv = tuple(str(a) for a in self.argv)
        if not argv or not argv[0]:
            raise RunSetupError("no command given")
        object.__setattr__(self, "argv", argv)
        if self.kind is not None and self.kind not in KINDS:
            raise RunSetupError(f"kind must be one of {', '.join(KINDS)}")
        if self.timeout is not None and self.timeout <= 0:
            raise RunSetupError("the timeout must be > 0 seconds")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise RunSetupError("max attempts must be >= 1")
        if self.session_id is not None and not (0 < len(self.session_id.strip()) <= 200):
            raise RunSetupError("a session id must be 1-200 characters")

    @classmethod
    def of(cls, spec: RunSpec | Sequence[str], /, **options: Any) -> RunSpec:
        """A spec from an argv and options, or a given spec with some options replaced."""
        if isinstance(spec, RunSpec):
            return dataclasses.replace(spec, **options) if options else spec
        return cls(spec, **options)

    @classmethod
    def option_names(cls) -> frozenset[str]:
        """The keyword options (every field but ``argv``)."""
        return frozenset(f.name for f in dataclasses.fields(cls) if f.name != "argv")
