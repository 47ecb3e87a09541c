"""The run directory: where a run's files live, by name (docs/agent_runs.md, "What one run keeps").

The recorder writes these paths, retention deletes them and the escalation bundle reads
them back; all three take the names from here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ipai_ops.runs.spec import RunSetupError

RUN_FILE = "run.json"
STDOUT_LOG = "stdout.log"
STDERR_LOG = "stderr.log"
EVENTS_FILE = "events.jsonl"
ENVELOPE_FILE = "envelope.json"
EVENTS_ENVELOPE_FILE = "events_envelope.json"
#: Every file an attempt directory may hold, in the order a bundle copies them.
ATTEMPT_FILES = (STDOUT_LOG, STDERR_LOG, EVENTS_FILE, ENVELOPE_FILE, EVENTS_ENVELOPE_FILE)
RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
#: An attempt directory's name: the attempt number.
ATTEMPT_RE = re.compile(r"^[0-9]{1,6}$")


def new_run_id(now: datetime | None = None) -> str:
    """``run-<UTC yyyymmddThhmmss>-<12 hex>``: unique, sortable by start, safe as a directory name."""
    moment = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return f"run-{moment:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:12]}"


def check_run_id(run_id: str) -> str:
    if not RUN_ID_RE.match(run_id):
        raise RunSetupError(f"run id {run_id!r} must be 1-128 letters, digits, '.', '_' or '-'")
    return run_id


@dataclass(frozen=True)
class AttemptDir:
    """``<run dir>/<attempt>/``: one execution's logs, events and envelopes."""

    path: Path

    @property
    def stdout_log(self) -> Path:
        return self.path / STDOUT_LOG

    @property
    def stderr_log(self) -> Path:
        return self.path / STDERR_LOG

    @property
    def events_file(self) -> Path:
        return self.path / EVENTS_FILE

    @property
    def envelope(self) -> Path:
        return self.path / ENVELOPE_FILE

    @property
    def events_envelope(self) -> Path:
        return self.path / EVENTS_ENVELOPE_FILE


@dataclass(frozen=True)
class RunDir:
    """``<artifacts>/<run_id>/``: ``run.json`` and one :class:`AttemptDir` per attempt."""

    path: Path

    @classmethod
    def create(cls, artifacts_dir: Path, run_id: str) -> RunDir:
        """Make the run's directory; a run id already on disk is refused (:class:`RunSetupError`)."""
        check_run_id(run_id)
        try:
            artifacts_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # FileExistsError too: the path is a file
            raise RunSetupError(f"cannot create the artifacts directory {artifacts_dir}: {exc.strerror}") from None
        path = artifacts_dir / run_id
        try:
            path.mkdir()
        except FileExistsError:
            raise RunSetupError(f"run id {run_id!r} was already recorded ({path}); choose a new one") from None
        except OSError as exc:
            raise RunSetupError(f"cannot create the run directory {path}: {exc.strerror}") from None
        return cls(path)

    @property
    def run_file(self) -> Path:
        return self.path / RUN_FILE

    def attempt(self, attempt: int) -> AttemptDir:
        """The attempt's directory, created if missing."""
        attempt_dir = AttemptDir(self.path / str(attempt))
        attempt_dir.path.mkdir(exist_ok=True)
        return attempt_dir

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def write_json(path: Path, value: Any) -> None:
    """Write ``value`` as JSON through a temporary file: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def prune_runs(root: Path, *, older_than_days: int, keep: Iterable[str] = (), now: float | None = None) -> list[Path]:
    """Delete run directories under ``root`` last touched more than N days ago.

    Only directories that hold a ``run.json`` are runs: a wrongly pointed ``--artifacts``
    never costs anyone a directory the recorder did not make. ``keep`` names run ids
    never deleted (the current run).
    """
    if older_than_days < 1:
        raise RunSetupError("retention must be at least 1 day")
    cutoff = (now if now is not None else time.time()) - older_than_days * 86400
    kept = set(keep)
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for entry in sorted(root.iterdir()):
        marker = entry / RUN_FILE
        if entry.name in kept or entry.is_symlink() or not entry.is_dir() or not marker.is_file():
            continue
        try:
            touched = max(marker.stat().st_mtime, entry.stat().st_mtime)
        except OSError:
            continue
        if touched < cutoff:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed
