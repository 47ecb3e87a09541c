"""GitHub Actions failure ingest: failed jobs and steps of a workflow run -> ops.agent_errors.

Two ways in, one parser:

* online: the REST API (run, jobs of the attempt, the attempt's log archive);
* offline: a logs archive downloaded earlier (``gh run download``-style zip of
  ``GET /repos/{owner}/{repo}/actions/runs/{id}/attempts/{n}/logs``), optionally
  with the saved run and jobs JSON for exact step conclusions and job ids.

Each failed step becomes one occurrence with id ``run:job:step:attempt``
(source ``github_actions``), so re-ingesting a run, or a redelivered
``workflow_run`` event, counts nothing twice.

Log archive layout (as GitHub serves it): ``<n>_<job name>.txt`` holds a job's
whole log; ``<job name>/<step number>_<step name>.txt`` one step's log (GitHub
stopped adding the per-step files to some archives, so steps are also cut out
of the job log by their timestamps). Every log line starts with an RFC 3339
timestamp; ``##[error]`` marks the runner's error annotations.
"""

from __future__ import annotations

import io
import json
import logging
import re
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Any

import requests

from ipai_ops import config
from ipai_ops.classify import Classification, classify, legacy, read_text
from ipai_ops.envelope import build_envelope, iso_utc
from ipai_ops.registry import Registry
from ipai_ops.store import ErrorOccurrence

log = logging.getLogger(__name__)

# The environment variables live in ipai_ops.config (with every other one).
GITHUB_TOKEN = config.GITHUB_TOKEN
GITHUB_API_URL = config.GITHUB_API_URL
DEFAULT_API_URL = config.DEFAULT_GITHUB_API_URL
SOURCE = "github_actions"
#: The REST API version this client was written against (sent on every call).
API_VERSION = "2022-11-28"

#: Step/job conclusions that mean "this failed" (cancelled is a person's choice, not a failure).
FAILED_CONCLUSIONS = frozenset({"failure", "timed_out", "startup_failure"})
#: How much of a failed step's log the envelope keeps (classification reads all of it).
EVIDENCE_TAIL_LINES = 80
MAX_ERROR_LINES = 50


class GitHubError(Exception):
    """An expected failure talking to GitHub, with its registry code."""

    def __init__(self, message: str, *, failure_code: str, status: int | None = None):
        super().__init__(message)
        self.failure_code = failure_code
        self.status = status


# --------------------------------------------------------------------------- REST client


def _link_next(header: str | None) -> str | None:
    """The ``rel="next"`` URL of a Link header (RFC 8288), as GitHub paginates."""
    for part in (header or "").split(","):
        match = re.match(r'\s*<([^>]+)>\s*;(?:.*;)?\s*rel="?next"?', part)
        if match:
            return match.group(1)
    return None


def _message_of(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip().replace("\n", " ")
        return text[:200]
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return json.dumps(body)[:200]


class GitHubClient:
    """A small REST client: auth, pagination, rate-limit waits, typed errors.

    Rate limits (docs.github.com, "Rate limits for the REST API"): a 403 or 429
    with ``x-ratelimit-remaining: 0`` means wait until ``x-ratelimit-reset``
    (epoch seconds); a ``retry-after`` header means wait that many seconds; a
    secondary limit without either means wait at least a minute. Waits longer
    than ``max_wait`` are not slept through: the call fails as GITHUB.RATE_LIMITED
    with the reset time, so a CI job does not hang for an hour.
    """

    def __init__(
        self,
        *,
        token: str,
        api_url: str = DEFAULT_API_URL,
        max_retries: int = 5,
        max_wait: float = 900.0,
        timeout: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        session: requests.Session | None = None,
    ):
        self.api_url = api_url.rstrip("/")
        self.max_retries = max_retries
        self.max_wait = max_wait
        self.timeout = timeout
        self._sleep = sleep
        self._clock = clock
        self._session = session or requests.Session()
        self._session.headers.update(
            {
                "Accept": "application/vnd.github+json",
                "Authorization": f"Bearer {token}",
                "X-GitHub-Api-Version": API_VERSION,
                "User-Agent": "ipai-ops",
            }
        )
        #: Seconds slept waiting for rate limits (reported, and asserted by tests).
        self.waited: list[float] = []

    def _url(self, path_or_url: str) -> str:
        return path_or_url if "://" in path_or_url else f"{self.api_url}/{path_or_url.lstrip('/')}"

    def _rate_limit_wait(self, response: requests.Response) -> float | None:
        """Seconds to wait if ``response`` is a rate-limit answer, else None."""
        if response.status_code not in (403, 429):
            return None
        headers = response.headers
        retry_after = headers.get("retry-after")
        if retry_after:
            try:
                return max(0.0, float(retry_after))
            except ValueError:
                try:
                    return max(0.0, parsedate_to_datetime(retry_after).timestamp() - self._clock())
                except (TypeError, ValueError):
                    return 60.0
        if headers.get("x-ratelimit-remaining") == "0" and headers.get("x-ratelimit-reset"):
            try:
                # +1: the reset second itself may still be inside the old window.
                return max(1.0, float(headers["x-ratelimit-reset"]) - self._clock() + 1)
            except ValueError:
                return 60.0
        if response.status_code == 429 or "rate limit" in _message_of(response).lower():
            return 60.0
        return None

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        params: Mapping[str, Any] | None = None,
        allow_redirects: bool = True,
    ) -> requests.Response:
        url = self._url(path_or_url)
        for attempt in range(1, self.max_retries + 2):
            try:
                response = self._session.request(
                    method,
                    url,
                    params=params,
                    timeout=self.timeout,
                    allow_redirects=allow_redirects,
                )
            except requests.Timeout as exc:
                raise GitHubError(
                    f"GitHub did not answer in {self.timeout:g}s: {url}",
                    failure_code="TRANSPORT.UPSTREAM_TIMEOUT",
                ) from exc
            except requests.ConnectionError as exc:
                raise GitHubError(
                    f"cannot reach GitHub at {self.api_url}: {exc.__class__.__name__}",
                    failure_code="TRANSPORT.UPSTREAM_TIMEOUT",
                ) from exc
            wait = self._rate_limit_wait(response)
            if wait is not None:
                reset = datetime.fromtimestamp(self._clock() + wait, timezone.utc)
                if wait > self.max_wait or attempt > self.max_retries:
                    raise GitHubError(
                        f"API rate limit exceeded ({_message_of(response)}); it resets at {iso_utc(reset)}, "
                        f"{wait:.0f}s from now{' (more than --max-wait)' if wait > self.max_wait else ''}",
                        failure_code="GITHUB.RATE_LIMITED",
                        status=response.status_code,
                    )
                log.warning("GitHub rate limit on %s; waiting %.0fs (attempt %s)", url, wait, attempt)
                self.waited.append(wait)
                self._sleep(wait)
                continue
            if response.status_code >= 500 and attempt <= self.max_retries:
                backoff = min(2.0 ** (attempt - 1), 30.0)
                log.warning(
                    "GitHub answered %s on %s; retrying in %.0fs",
                    response.status_code,
                    url,
                    backoff,
                )
                self._sleep(backoff)
                continue
            self._raise_for_status(response, url)
            return response
        raise AssertionError("unreachable")

    @staticmethod
    def _raise_for_status(response: requests.Response, url: str) -> None:
        status = response.status_code
        if status < 400 or status in (301, 302, 303, 307, 308):
            return
        message = _message_of(response)
        if status == 401:
            raise GitHubError(
                f"GitHub rejected the token: {message} ({url})",
                failure_code="GITHUB.AUTH_FAILED",
                status=status,
            )
        if status == 403:
            raise GitHubError(
                f"the token may not do this: {message} ({url})",
                failure_code="GITHUB.AUTH_FAILED",
                status=status,
            )
        if status == 404:
            raise GitHubError(
                f"HTTP 404: Not Found ({url}); the run does not exist or the token cannot see it",
                failure_code="GITHUB.NOT_FOUND",
                status=status,
            )
        if status == 410:
            raise GitHubError(
                f"HTTP 410: {message} ({url}); logs are past retention",
                failure_code="GITHUB.LOGS_EXPIRED",
                status=status,
            )
        if status >= 500:
            raise GitHubError(
                f"GitHub answered HTTP {status}: {message} ({url})",
                failure_code="TRANSPORT.UPSTREAM_5XX",
                status=status,
            )
        raise GitHubError(
            f"GitHub answered HTTP {status}: {message} ({url})",
            failure_code="GITHUB.NOT_FOUND" if status == 422 else "UNCLASSIFIED.UNKNOWN",
            status=status,
        )

    @staticmethod
    def _json(response: requests.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise GitHubError(
                f"GitHub answered HTTP {response.status_code} with a body that is not JSON ({response.url}): "
                "is --api-url the REST API (https://api.github.com, or https://HOST/api/v3 on GitHub Enterprise)?",
                failure_code="UNCLASSIFIED.UNKNOWN",
                status=response.status_code,
            ) from None

    def get_json(self, path_or_url: str, *, params: Mapping[str, Any] | None = None) -> Any:
        return self._json(self.request("GET", path_or_url, params=params))

    def paginate(self, path: str, *, key: str, params: Mapping[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Every item of a paginated list endpoint, following ``Link: rel="next"``."""
        url: str | None = path
        query: Mapping[str, Any] | None = {"per_page": 100, **(params or {})}
        while url:
            response = self.request("GET", url, params=query)
            body = self._json(response)
            yield from body.get(key, []) if isinstance(body, dict) else body
            url = _link_next(response.headers.get("link"))
            query = None  # the next URL carries its own query string

    def download_logs(self, path: str) -> bytes:
        """A log archive: the API answers 302 to a short-lived signed URL on blob storage.

        The blob request goes without our token (it is not GitHub's API, and the
        signature in the URL is the credential). A 403 there whose body says the
        signature expired means the URL lapsed: GITHUB.LOGS_EXPIRED, not auth.
        """
        response = self.request("GET", path, allow_redirects=False)
        if response.status_code not in (301, 302, 303, 307, 308):
            return response.content
        location = response.headers.get("location")
        if not location:
            raise GitHubError(
                f"GitHub redirected without a Location ({path})",
                failure_code="UNCLASSIFIED.UNKNOWN",
            )
        try:
            blob = requests.get(location, timeout=self.timeout * 4, headers={"User-Agent": "ipai-ops"})
        except requests.RequestException as exc:
            raise GitHubError(
                f"cannot download the log archive: {exc.__class__.__name__}",
                failure_code="TRANSPORT.UPSTREAM_TIMEOUT",
            ) from exc
        if blob.status_code == 200:
            return blob.content
        text = blob.text[:500]
        safe = location.split("?", 1)[0]  # the query string is the credential: never log it
        if blob.status_code in (403, 404, 410) and re.search(
            r"Signature not valid in the specified time frame|AuthenticationFailed|Request has expired|expired",
            text,
            re.I,
        ):
            raise GitHubError(
                f"the signed log URL expired before the download (HTTP {blob.status_code} from {safe}): "
                "Signature not valid in the specified time frame",
                failure_code="GITHUB.LOGS_EXPIRED",
                status=blob.status_code,
            )
        if blob.status_code == 410:
            raise GitHubError(
                f"HTTP 410 from {safe}: logs are past retention",
                failure_code="GITHUB.LOGS_EXPIRED",
                status=410,
            )
        raise GitHubError(
            f"log archive download failed: HTTP {blob.status_code} from {safe}",
            failure_code="TRANSPORT.UPSTREAM_5XX" if blob.status_code >= 500 else "UNCLASSIFIED.UNKNOWN",
            status=blob.status_code,
        )


# --------------------------------------------------------------------------- log archive


_TS_RE = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z) ?")
_STEP_FILE_RE = re.compile(r"^(?P<dir>[^/]+)/(?P<number>\d+)_(?P<name>.*)\.txt$")
_JOB_FILE_RE = re.compile(r"^(?P<index>\d+)_(?P<name>[^/]*)\.txt$")


def _key(name: str) -> str:
    """Job names as archive paths: GitHub drops characters a file name cannot hold."""
    return re.sub(r"[^0-9a-z]+", "", name.lower())


@dataclass
class LogArchive:
    """A run attempt's logs: job name -> whole log, and job dir -> step number -> log."""

    job_logs: dict[str, str] = field(default_factory=dict)
    job_order: list[str] = field(default_factory=list)
    step_logs: dict[str, dict[int, str]] = field(default_factory=dict)
    step_names: dict[str, dict[int, str]] = field(default_factory=dict)

    @classmethod
    def from_bytes(cls, data: bytes) -> LogArchive:
        try:
            archive = zipfile.ZipFile(io.BytesIO(data))
        except zipfile.BadZipFile as exc:
            raise ValueError(f"not a GitHub Actions logs archive (zip): {exc}") from exc
        out = cls()
        indexed: list[tuple[int, str]] = []
        for info in archive.infolist():
            if info.is_dir():
                continue
            text = archive.read(info).decode("utf-8", errors="replace").lstrip("\ufeff")
            step = _STEP_FILE_RE.match(info.filename)
            if step:
                number = int(step.group("number"))
                out.step_logs.setdefault(step.group("dir"), {})[number] = text
                out.step_names.setdefault(step.group("dir"), {})[number] = step.group("name")
                continue
            job = _JOB_FILE_RE.match(info.filename)
            if job:
                indexed.append((int(job.group("index")), job.group("name")))
                out.job_logs[job.group("name")] = text
        out.job_order = [name for _, name in sorted(indexed)]
        return out

    def job_log(self, name: str) -> str | None:
        return _by_job(self.job_logs, name)

    def steps_of(self, name: str) -> dict[int, str]:
        return _by_job(self.step_logs, name) or {}

    def step_names_of(self, name: str) -> dict[int, str]:
        return _by_job(self.step_names, name) or {}


def _by_job(table: Mapping[str, Any], name: str) -> Any:
    """``table[name]``, else the entry whose name matches once reduced to an archive path (:func:`_key`)."""
    if name in table:
        return table[name]
    wanted = _key(name)
    for candidate, value in table.items():
        if _key(candidate) == wanted:
            return value
    return None


def _parse_ts(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        # Log lines carry 7 fractional digits; fromisoformat (3.10) takes at most 6.
        text = re.sub(r"(\.\d{6})\d+", r"\1", text.replace("Z", "+00:00"))
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _split_line(line: str) -> tuple[datetime | None, str]:
    match = _TS_RE.match(line)
    if not match:
        return None, line
    return _parse_ts(match.group(1)), line[match.end() :]


def slice_by_time(job_log: str, start: datetime | None, end: datetime | None) -> str:
    """The lines of a job log written while a step ran (API times have 1 s resolution)."""
    if start is None or end is None:
        return ""
    upper = end + timedelta(seconds=1)
    kept, inside = [], False
    for line in job_log.splitlines():
        moment, _ = _split_line(line)
        if moment is not None:
            inside = start <= moment < upper
        if inside:
            kept.append(line)
    return "\n".join(kept)


_MARKERS_RE = re.compile(r"^##\[(?:group|endgroup|command|section|debug)\]")
_EXIT_CODE_RE = re.compile(r"Process completed with exit code (\d+)\.")
_DECORATION_RE = re.compile(r"^[=_\-*#\s]{3,}|[=_\-*#\s]{3,}$")
_GENERIC_ERROR_RE = re.compile(r"^Process completed with exit code \d+\.$")


def clean_lines(text: str) -> list[str]:
    """Log lines without timestamps and runner grouping markers."""
    out = []
    for line in text.splitlines():
        _, rest = _split_line(line)
        rest = _MARKERS_RE.sub("", rest)
        if rest.strip():
            out.append(rest.rstrip())
    return out


def error_lines(lines: list[str]) -> list[str]:
    """The runner's ``##[error]`` annotations, marker removed, in order, deduplicated."""
    found: list[str] = []
    for line in lines:
        index = line.find("##[error]")
        if index >= 0:
            text = line[index + len("##[error]") :].strip()
            if text and text not in found:
                found.append(text)
    return found[:MAX_ERROR_LINES]


# --------------------------------------------------------------------------- failed steps


@dataclass(frozen=True)
class RunInfo:
    repository: str
    run_id: int
    attempt: int
    workflow: str
    html_url: str | None = None
    head_branch: str | None = None
    head_sha: str | None = None
    event: str | None = None
    conclusion: str | None = None
    updated_at: str | None = None

    @classmethod
    def from_api(cls, repository: str, run: Mapping[str, Any], *, attempt: int | None = None) -> RunInfo:
        return cls(
            repository=repository,
            run_id=int(run["id"]),
            attempt=int(attempt or run.get("run_attempt") or 1),
            workflow=str(run.get("name") or run.get("path") or "workflow"),
            html_url=run.get("html_url"),
            head_branch=run.get("head_branch"),
            head_sha=run.get("head_sha"),
            event=run.get("event"),
            conclusion=run.get("conclusion"),
            updated_at=run.get("updated_at"),
        )


@dataclass(frozen=True)
class FailedStep:
    job_id: str
    job_name: str
    job_url: str | None
    step_number: int
    step_name: str
    conclusion: str
    started_at: datetime | None
    completed_at: datetime | None
    #: The step's log (timestamps kept); None when the logs are gone.
    log: str | None

    @property
    def location(self) -> str:
        return f"{self.job_name}:{self.step_name}"


def _failed_steps_of_job(job: Mapping[str, Any], archive: LogArchive | None) -> list[FailedStep]:
    steps = sorted(job.get("steps") or [], key=lambda s: s.get("number", 0))
    chosen = [s for s in steps if s.get("conclusion") in FAILED_CONCLUSIONS]
    if not chosen:
        # A timed-out job shows its running step as cancelled; a setup failure has no step.
        chosen = [s for s in steps if s.get("conclusion") == "cancelled"][:1]
    job_log = archive.job_log(job["name"]) if archive else None
    step_files = archive.steps_of(job["name"]) if archive else {}
    out = []
    for step in chosen:
        number = int(step.get("number", 0))
        start, end = _parse_ts(step.get("started_at")), _parse_ts(step.get("completed_at"))
        text = step_files.get(number)
        if text is None and job_log is not None:
            text = slice_by_time(job_log, start, end) or None
        out.append(
            FailedStep(
                job_id=str(job["id"]),
                job_name=job["name"],
                job_url=job.get("html_url"),
                step_number=number,
                step_name=step.get("name") or f"step {number}",
                conclusion=step.get("conclusion") or job.get("conclusion") or "failure",
                started_at=start,
                completed_at=end,
                log=text,
            )
        )
    if not out:
        out.append(
            FailedStep(
                job_id=str(job["id"]),
                job_name=job["name"],
                job_url=job.get("html_url"),
                step_number=0,
                step_name="(job)",
                conclusion=job.get("conclusion") or "failure",
                started_at=_parse_ts(job.get("started_at")),
                completed_at=_parse_ts(job.get("completed_at")),
                log=job_log,
            )
        )
    return out


def failed_steps_from_jobs(jobs: list[Mapping[str, Any]], archive: LogArchive | None) -> list[FailedStep]:
    """Failed steps of failed jobs, with their logs when the archive has them."""
    out: list[FailedStep] = []
    for job in jobs:
        if job.get("conclusion") in FAILED_CONCLUSIONS:
            out.extend(_failed_steps_of_job(job, archive))
    return out


def failed_steps_from_archive(archive: LogArchive) -> list[FailedStep]:
    """Offline, without the jobs JSON: a step (or job) failed if its log has ``##[error]``.

    Job ids are unknown offline, so the job's name (letters and digits) stands in for its id.
    """
    out: list[FailedStep] = []
    for name in archive.job_order:
        job_log = archive.job_logs[name]
        steps = archive.steps_of(name)
        names = archive.step_names_of(name)
        failing = {n: t for n, t in sorted(steps.items()) if "##[error]" in t}
        if not failing and "##[error]" not in job_log:
            continue
        if not failing:
            failing = {0: job_log}
        for number, text in failing.items():
            stamps = [ts for ts, _ in map(_split_line, text.splitlines()) if ts]
            out.append(
                FailedStep(
                    job_id=_key(name) or name,
                    job_name=name,
                    job_url=None,
                    step_number=number,
                    step_name=names.get(number, f"step {number}") if number else "(job)",
                    conclusion="failure",
                    started_at=stamps[0] if stamps else None,
                    completed_at=stamps[-1] if stamps else None,
                    log=text,
                )
            )
    return out


# --------------------------------------------------------------------------- classification


@dataclass(frozen=True)
class StepFailure:
    step: FailedStep
    classification: Classification
    message: str
    error_lines: list[str]
    occurrence: ErrorOccurrence

    def as_dict(self) -> dict[str, Any]:
        return {
            "occurrence_id": self.occurrence.occurrence_id,
            "code": self.classification.code,
            "matched_by": self.classification.matched_by,
            "signature": self.classification.signature,
            "job": self.step.job_name,
            "step": self.step.step_name,
            "step_number": self.step.step_number,
            "conclusion": self.step.conclusion,
            "message": self.message,
            "fingerprint": self.occurrence.fingerprint,
            "previous_fingerprint": self.occurrence.previous_fingerprint,
            "family": self.classification.family,
            "evidence": [e.as_dict() for e in self.classification.evidence],
            "captures": self.classification.captures,
            "error_lines": self.error_lines[:10],
        }


#: Grouping version 1 classified a step from its error annotations and last 200 lines.
_V1_TAIL_LINES = 200


def _undecorated(message: str) -> str:
    """pytest and friends frame their summary lines with "=====": keep the words only."""
    return _DECORATION_RE.sub("", message).strip()[:1000] or message[:1000]


def _grouping_v1(step: FailedStep, lines: list[str], errors: list[str], first: str | None) -> tuple[str, str]:
    """The code and message grouping version 1 gave a failed step (its group key's inputs)."""
    tail = lines[-_V1_TAIL_LINES:]
    code, pattern = legacy.classify_v1_signature(text="\n".join([*errors, *tail]) or None, message=first)
    picked = next((line.strip() for line in [*errors, *tail] if pattern.search(line)), None) if pattern else None
    message = picked or first or f'step "{step.step_name}" of job "{step.job_name}" ended with {step.conclusion}'
    return code, _undecorated(message)


def analyse_step(registry: Registry, run: RunInfo, step: FailedStep) -> StepFailure:
    lines = clean_lines(step.log or "")
    errors = error_lines(lines)
    specific = [e for e in errors if not _GENERIC_ERROR_RE.match(e)]
    first = (specific or errors or [None])[0]
    if step.log is None:
        first = f'step "{step.step_name}" of job "{step.job_name}" failed; its log is not available'
        classification = classify(registry, message=first)
    else:
        # The whole step log: the reader finds where it failed and never drops its tail.
        classification = classify(registry, log=read_text(step.log.replace("\x00", " ")))
    previous_code, previous_message = _grouping_v1(step, lines, errors, first)
    classification = replace(classification, previous_code=previous_code)
    message = _undecorated(
        (classification.headline if not classification.is_fallback else None)
        or first
        or (f'step "{step.step_name}" of job "{step.job_name}" ended with {step.conclusion}')
    )
    exit_codes = [int(m.group(1)) for e in errors for m in [_EXIT_CODE_RE.search(e)] if m]
    occurrence_id = f"{run.run_id}:{step.job_id}:{step.step_number}:{run.attempt}"
    service = f"{run.repository}/{run.workflow}"
    duration_ms = None
    if step.started_at and step.completed_at:
        duration_ms = max(0, int((step.completed_at - step.started_at).total_seconds() * 1000))
    occurred = step.completed_at or _parse_ts(run.updated_at) or datetime.now(timezone.utc)
    envelope = build_envelope(
        classification,
        message=message,
        error_type="github_actions.step_failed",
        # The location keeps one group per (workflow, job, step): "1 failed" in two
        # different test jobs are two problems for two owners.
        frames=(f"{run.workflow}:{step.location}",),
        context={
            "source": SOURCE,
            "service": service,
            "attempt": run.attempt,
            "occurrence_id": occurrence_id,
            "correlation_id": str(run.run_id),
            "env": "ci",
        },
        details={
            "repository": run.repository,
            "workflow": run.workflow,
            "run_id": run.run_id,
            "run_attempt": run.attempt,
            "run_url": run.html_url,
            "event": run.event,
            "head_branch": run.head_branch,
            "head_sha": run.head_sha,
            "job_id": step.job_id,
            "job": step.job_name,
            "job_url": step.job_url,
            "step_number": step.step_number,
            "step": step.step_name,
            "conclusion": step.conclusion,
            "error_lines": errors[:20],
            "logs_available": step.log is not None,
        },
        evidence={
            "exit_code": exit_codes[-1] if exit_codes else None,
            "duration_ms": duration_ms,
            "stdout_tail": "\n".join(lines[-EVIDENCE_TAIL_LINES:]) or None,
            "links": [u for u in (step.job_url, run.html_url) if u],
        },
        occurred_at=occurred,
        previous_message=previous_message,
    )
    occurrence = ErrorOccurrence.from_envelope(
        envelope,
        source=SOURCE,
        occurrence_id=occurrence_id,
        error_type="github_actions.step_failed",
        service=service,
    )
    return StepFailure(step, classification, envelope["error"]["message"], errors, occurrence)


# --------------------------------------------------------------------------- the whole ingest


@dataclass
class IngestReport:
    run: RunInfo
    failures: list[StepFailure]
    warnings: list[dict[str, str]] = field(default_factory=list)
    written: dict[str, int] | None = None
    jobs_seen: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "run": {
                "repository": self.run.repository,
                "run_id": self.run.run_id,
                "attempt": self.run.attempt,
                "workflow": self.run.workflow,
                "url": self.run.html_url,
                "conclusion": self.run.conclusion,
            },
            "jobs_seen": self.jobs_seen,
            "failures": [f.as_dict() for f in self.failures],
            "warnings": self.warnings,
            "written": self.written,
        }


def fetch_run(
    client: GitHubClient,
    repository: str,
    run_id: int,
    *,
    attempt: int | None = None,
) -> tuple[RunInfo, list[dict[str, Any]], LogArchive | None, list[dict[str, str]]]:
    """Run, jobs of the attempt (all pages) and its log archive (None when expired)."""
    run_json = client.get_json(f"/repos/{repository}/actions/runs/{run_id}")
    run = RunInfo.from_api(repository, run_json, attempt=attempt)
    jobs = list(client.paginate(f"/repos/{repository}/actions/runs/{run_id}/attempts/{run.attempt}/jobs", key="jobs"))
    warnings: list[dict[str, str]] = []
    archive = None
    if any(j.get("conclusion") in FAILED_CONCLUSIONS for j in jobs):
        try:
            archive = LogArchive.from_bytes(
                client.download_logs(f"/repos/{repository}/actions/runs/{run_id}/attempts/{run.attempt}/logs")
            )
        except GitHubError as exc:
            if exc.failure_code != "GITHUB.LOGS_EXPIRED":
                raise
            # The step results from the API still say what failed: ingest those, say why thin.
            warnings.append({"code": exc.failure_code, "message": str(exc)})
        except ValueError as exc:
            warnings.append({"code": "UNCLASSIFIED.UNKNOWN", "message": f"log archive unreadable: {exc}"})
    return run, jobs, archive, warnings


def build_report(
    registry: Registry,
    run: RunInfo,
    *,
    jobs: list[dict[str, Any]] | None,
    archive: LogArchive | None,
    warnings: list[dict[str, str]] | None = None,
) -> IngestReport:
    if jobs is not None:
        steps = failed_steps_from_jobs(jobs, archive)
        seen = len(jobs)
    elif archive is not None:
        steps = failed_steps_from_archive(archive)
        seen = len(archive.job_order)
    else:
        steps, seen = [], 0
    failures = [analyse_step(registry, run, step) for step in steps]
    return IngestReport(run=run, failures=failures, warnings=list(warnings or []), jobs_seen=seen)
