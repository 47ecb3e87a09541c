"""Dataset export: agent runs -> (prompt, context, patch, outcome) JSONL and preference pairs.

Input contract (``ops.agent_runs.metadata``): ``prompt`` (text), ``context``
(any JSON), ``patch`` (unified diff text), optional ``variant_id``. The outcome is
the run's status, its error code (``error_id`` -> ``ops.agent_errors.code``) and
its benchmark scores. Runs without a prompt or a patch are counted and skipped.

Guarantees:

* secrets are redacted with the envelope redactor (:func:`ipai_ops.text.redact_obj`);
* the train/eval split is a pure function of ``salt`` and the *task* (``task_ref``,
  else the run id), so two runs of one task never straddle the split (no leakage)
  and re-exports put every record where it was before;
* two exports of the same rows are byte-identical (sorted keys, fixed order, no
  timestamps in the manifest), and the manifest carries each file's sha256;
* rows are streamed through a server-side cursor and written as they come; only
  one task's runs are held at a time (for its preference pairs);
* every record, pair and the manifest is validated against its JSON Schema
  (``ssot/schemas/dataset_*.schema.json``) before it is written: a record that fails
  raises :class:`DatasetRecordInvalid` naming the run, and nothing of that export is
  left in the output directory (files are written aside and moved in on success).

The same contract is described in ``docs/agents/smol_playbook_adoption.md`` (section 3
and 4) and ``docs/engineering_loop.md`` ("Dataset export").
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import IO, Any

import jsonschema

from ipai_ops import config
from ipai_ops.ci._sql import sql
from ipai_ops.text import redact_obj

FORMAT = "ipai-ops.dataset/1"
SPLITS = ("train", "eval")
FILES = {
    ("records", "train"): "train.jsonl",
    ("records", "eval"): "eval.jsonl",
    ("pairs", "train"): "preferences_train.jsonl",
    ("pairs", "eval"): "preferences_eval.jsonl",
}
_FETCH = 1000
SCHEMAS = {
    "record": "ssot/schemas/dataset_record.schema.json",
    "preference_pair": "ssot/schemas/dataset_preference_pair.schema.json",
    "manifest": "ssot/schemas/dataset_manifest.schema.json",
}
SPLIT_KEY = (
    "int.from_bytes(sha256(salt + '\\x1f' + (task_ref or 'run:' + run_id))[:8], 'big') / 2**64 < eval_fraction -> eval"
)
#: Error-code categories of infrastructure failures: such a run is never a *rejected* example
#: (the agent was not at fault; it teaches nothing about the agent's answer).
NEVER_REJECTED = ("BUILD", "TRANSPORT")


class DatasetContractError(ValueError):
    """Something the export was about to write breaks its schema; ``errors`` holds ``/path: message``."""

    def __init__(self, what: str, errors: list[str]):
        super().__init__(f"{what} breaks its schema: " + "; ".join(errors))
        self.errors = errors


class DatasetRecordInvalid(DatasetContractError):
    """A run's record (or a preference pair built from it) fails the schema; ``run_id`` names the run."""

    def __init__(self, run_id: str, kind: str, errors: list[str]):
        super().__init__(f"run {run_id}: its {kind}", errors)
        self.run_id = run_id
        self.kind = kind


class DatasetManifestInvalid(DatasetContractError):
    """The manifest fails its schema (a programming error: the export wrote nothing)."""

    def __init__(self, errors: list[str]):
        super().__init__("the dataset manifest", errors)


@cache
def schema(name: str) -> dict[str, Any]:
    """One of the dataset's JSON Schemas by its :data:`SCHEMAS` name."""
    return json.loads(config.data_path(SCHEMAS[name]).read_text(encoding="utf-8"))


@cache
def _validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema(name))


def schema_errors(name: str, document: Any) -> list[str]:
    """Every violation of schema ``name`` as ``/json/path: message``; empty when valid."""
    return [
        f"/{'/'.join(str(p) for p in err.absolute_path)}: {err.message}"
        for err in sorted(_validator(name).iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    ]


@dataclass(frozen=True)
class ExportFilters:
    agent: str | None = None
    variant: str | None = None
    status: str | None = None
    #: A PostgreSQL interval, e.g. "7 days": runs started within it.
    since: str | None = None
    limit: int | None = None


@dataclass(frozen=True)
class ExportSettings:
    eval_fraction: float = 0.1
    salt: str = "ipai-ops-dataset-v1"
    #: Composite points the chosen run must lead the rejected one by.
    margin: float = 5.0
    max_pairs_per_task: int = 16
    benchmark_version: int = 1


def split_of(key: str, *, salt: str, eval_fraction: float) -> str:
    digest = hashlib.sha256(f"{salt}\x1f{key}".encode()).digest()
    return "eval" if int.from_bytes(digest[:8], "big") / 2**64 < eval_fraction else "train"


def _dump(value: Any) -> bytes:
    return (json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str) + "\n").encode()


class _HashedWriter:
    def __init__(self, path: Path):
        self.path = path
        self._file: IO[bytes] = path.open("wb")
        self._hash = hashlib.sha256()
        self.lines = 0
        self.bytes = 0

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self._hash.update(data)
        self.lines += 1
        self.bytes += len(data)

    def close(self) -> dict[str, Any]:
        self._file.close()
        return {"sha256": self._hash.hexdigest(), "bytes": self.bytes, "lines": self.lines}


def _rows(conn, filters: ExportFilters, settings: ExportSettings, fetch_size: int) -> Iterator[tuple]:
    """Rows from a server-side (named) cursor: the client holds ``fetch_size`` rows at most."""
    params = {**asdict(filters), "version": settings.benchmark_version}
    with conn.cursor(name="ipai_ops_dataset_export") as cur:
        cur.itersize = fetch_size
        cur.execute(sql("export_runs"), params)
        yield from cur


def count_rows(conn, filters: ExportFilters) -> int:
    with conn.cursor() as cur:
        cur.execute(sql("export_count"), asdict(filters))
        return int(cur.fetchone()[0])


def _record(row: tuple) -> dict[str, Any] | None:
    run_id, agent, task_ref, status, started_at, duration_ms, metadata, error_code, composite, tier, scores = row
    metadata = metadata or {}
    if not metadata.get("prompt") or not metadata.get("patch"):
        return None
    return {
        "id": run_id,
        "task": task_ref,
        "agent": agent,
        "variant_id": metadata.get("variant_id"),
        "started_at": started_at.isoformat() if started_at else None,
        "prompt": redact_obj(metadata["prompt"]),
        "context": redact_obj(metadata.get("context")),
        "patch": redact_obj(metadata["patch"]),
        "outcome": {
            "status": status,
            "error_code": error_code,
            "duration_ms": duration_ms,
            "composite": float(composite) if composite is not None else None,
            "tier": tier,
            "scores": {k: float(v) for k, v in sorted((scores or {}).items())},
        },
    }


def _pairs(task: str, records: list[dict[str, Any]], settings: ExportSettings) -> list[dict[str, Any]]:
    scored = sorted(
        (r for r in records if r["outcome"]["composite"] is not None),
        key=lambda r: (-r["outcome"]["composite"], r["id"]),
    )
    candidates = []
    for better, worse in itertools.combinations(scored, 2):
        if _infrastructure_failure(worse):
            continue
        lead = better["outcome"]["composite"] - worse["outcome"]["composite"]
        if lead >= settings.margin:
            candidates.append((lead, better, worse))
    # Widest margins first: the clearest preferences are the most useful when capped.
    candidates.sort(key=lambda c: (-c[0], c[1]["id"], c[2]["id"]))

    def side(r: dict[str, Any]) -> dict[str, Any]:
        return {k: r[k] for k in ("id", "variant_id", "prompt", "context", "patch")} | {
            "composite": r["outcome"]["composite"]
        }

    return [
        {"task": task, "margin": round(lead, 4), "chosen": side(b), "rejected": side(w)}
        for lead, b, w in candidates[: settings.max_pairs_per_task]
    ]


def _infrastructure_failure(record: dict[str, Any]) -> bool:
    code = record["outcome"]["error_code"]
    return bool(code) and code.split(".", 1)[0] in NEVER_REJECTED


def _checked(name: str, document: dict[str, Any], run_id: str) -> bytes:
    errors = schema_errors(name, document)
    if errors:
        raise DatasetRecordInvalid(run_id, name.replace("_", " "), errors)
    return _dump(document)


def export_dataset(
    conn,
    out_dir: Path,
    *,
    filters: ExportFilters = ExportFilters(),
    settings: ExportSettings = ExportSettings(),
    progress: bool | None = None,
    fetch_size: int = _FETCH,
) -> dict[str, Any]:
    """Write the JSONL files and ``manifest.json`` into ``out_dir``; return the manifest.

    The files are written into a scratch directory inside ``out_dir`` and moved into
    place only once every record, pair and the manifest passed their schemas; on any
    error the scratch directory is removed and ``out_dir`` keeps what it had.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".export-", dir=out_dir))
    try:
        manifest = _export_into(
            conn, scratch, filters=filters, settings=settings, progress=progress, fetch_size=fetch_size
        )
        for name in (*sorted(manifest["files"]), "manifest.json"):
            os.replace(scratch / name, out_dir / name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return manifest


def _export_into(
    conn,
    out_dir: Path,
    *,
    filters: ExportFilters,
    settings: ExportSettings,
    progress: bool | None,
    fetch_size: int,
) -> dict[str, Any]:
    from tqdm import tqdm

    show = sys.stderr.isatty() if progress is None else progress
    # The count scans what the export reads: pay for it only when a bar shows it.
    total = count_rows(conn, filters) if show else None
    writers = {key: _HashedWriter(out_dir / name) for key, name in FILES.items()}
    counts = {
        "rows_read": 0,
        "skipped_incomplete": 0,
        "records": dict.fromkeys(SPLITS, 0),
        "pairs": dict.fromkeys(SPLITS, 0),
        "tasks": dict.fromkeys(SPLITS, 0),
    }
    try:
        with conn:  # a named cursor lives inside one transaction
            bar = tqdm(total=total, unit="run", desc="export", disable=not show, file=sys.stderr, leave=False)
            # Rows arrive ordered by task key, so each task's runs are consecutive.
            for task_key, group in itertools.groupby(_rows(conn, filters, settings, fetch_size), key=_task_key):
                split = split_of(task_key, salt=settings.salt, eval_fraction=settings.eval_fraction)
                records = []
                for row in group:
                    counts["rows_read"] += 1
                    bar.update(1)
                    record = _record(row)
                    if record is None:
                        counts["skipped_incomplete"] += 1
                        continue
                    record["split"] = split
                    writers[("records", split)].write(_checked("record", record, record["id"]))
                    counts["records"][split] += 1
                    records.append(record)
                if records:
                    counts["tasks"][split] += 1
                for pair in _pairs(task_key, records, settings):
                    pair["split"] = split
                    writers[("pairs", split)].write(_checked("preference_pair", pair, pair["chosen"]["id"]))
                    counts["pairs"][split] += 1
            bar.close()
    finally:
        files = {writer.path.name: writer.close() for writer in writers.values()}
    manifest = {
        "format": FORMAT,
        "filters": asdict(filters),
        "split": {
            "eval_fraction": settings.eval_fraction,
            "salt": settings.salt,
            "key": SPLIT_KEY,
        },
        "preferences": {
            "margin": settings.margin,
            "max_pairs_per_task": settings.max_pairs_per_task,
            "by": "benchmark composite within one task",
            "never_rejected": list(NEVER_REJECTED),
        },
        "benchmark_version": settings.benchmark_version,
        # A fixed value of the manifest contract (ssot/schemas/dataset_manifest.schema.json),
        # kept as written since v1 though the function now lives in ipai_ops.text.
        "redaction": "ipai_ops.envelope.redact_obj",
        "schemas": dict(SCHEMAS),
        "counts": counts,
        "files": dict(sorted(files.items())),
    }
    errors = schema_errors("manifest", manifest)
    if errors:
        raise DatasetManifestInvalid(errors)
    (out_dir / "manifest.json").write_bytes(_dump(manifest))
    return manifest


def _task_key(row: tuple) -> str:
    return row[2] or f"run:{row[0]}"


# --------------------------------------------------------------------------- S3 destination

#: The standard AWS variables the S3 upload reads; credentials come from these and nowhere
#: else (no ~/.aws files, no instance metadata), and their values are never printed.
AWS_ACCESS_KEY_ID = "AWS_ACCESS_KEY_ID"
AWS_SECRET_ACCESS_KEY = "AWS_SECRET_ACCESS_KEY"  # pragma: allowlist secret (a variable name)
AWS_SESSION_TOKEN = "AWS_SESSION_TOKEN"
#: An S3-compatible endpoint (MinIO, moto, R2...): ``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL``.
AWS_ENDPOINT_URL_S3 = "AWS_ENDPOINT_URL_S3"
AWS_ENDPOINT_URL = "AWS_ENDPOINT_URL"
AWS_REGION = "AWS_REGION"
AWS_DEFAULT_REGION = "AWS_DEFAULT_REGION"
_CONNECT_TIMEOUT = 10
_READ_TIMEOUT = 60
_S3_URL = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(?P<prefix>[^\s]*))?$")


class DatasetUploadError(RuntimeError):
    """The export could not be stored in the bucket; ``unavailable`` when the endpoint did not answer."""

    def __init__(self, message: str, *, unavailable: bool = False):
        super().__init__(message)
        self.unavailable = unavailable


@dataclass(frozen=True)
class S3Target:
    bucket: str
    prefix: str

    @classmethod
    def parse(cls, url: str) -> S3Target:
        """``s3://bucket/prefix`` -> target; ValueError naming the rule on anything else."""
        match = _S3_URL.match(url)
        if not match:
            raise ValueError(f"not an s3://bucket/prefix URL (bucket: 3-63 of a-z 0-9 . -): {url!r}")
        prefix = (match["prefix"] or "").strip("/")
        return cls(match["bucket"], f"{prefix}/" if prefix else "")

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def url(self, name: str = "") -> str:
        return f"s3://{self.bucket}/{self.key(name)}"


def _s3_client(environ: Mapping[str, str]):
    import boto3
    from botocore.config import Config

    key_id, secret = environ.get(AWS_ACCESS_KEY_ID), environ.get(AWS_SECRET_ACCESS_KEY)
    if not key_id or not secret:
        raise DatasetUploadError(
            f"S3 credentials come from the environment: set {AWS_ACCESS_KEY_ID} and {AWS_SECRET_ACCESS_KEY}"
        )
    # A session of its own, so no ~/.aws profile or instance role is consulted.
    session = boto3.session.Session(
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        aws_session_token=environ.get(AWS_SESSION_TOKEN) or None,
        region_name=environ.get(AWS_REGION) or environ.get(AWS_DEFAULT_REGION) or "us-east-1",
    )
    return session.client(
        "s3",
        endpoint_url=environ.get(AWS_ENDPOINT_URL_S3) or environ.get(AWS_ENDPOINT_URL) or None,
        config=Config(
            connect_timeout=_CONNECT_TIMEOUT,
            read_timeout=_READ_TIMEOUT,
            retries={"max_attempts": 3, "mode": "standard"},
        ),
    )


def upload_export(
    local_dir: Path, manifest: dict[str, Any], target: S3Target, *, environ: Mapping[str, str] | None = None
) -> list[str]:
    """Put the export's files under ``target``, manifest last (a reader that sees the
    manifest sees every file it names); return the object URLs written.

    The bytes are those of the local export: the files are uploaded as written, and each
    upload carries its SHA-256 (``ChecksumSHA256``) so the store rejects a corrupted body.
    """
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

    client = _s3_client(os.environ if environ is None else environ)
    written = []
    for name in (*sorted(manifest["files"]), "manifest.json"):
        data = (local_dir / name).read_bytes()
        try:
            client.put_object(
                Bucket=target.bucket,
                Key=target.key(name),
                Body=data,
                ContentType="application/json" if name.endswith(".json") else "application/x-ndjson",
                ChecksumSHA256=base64.b64encode(hashlib.sha256(data).digest()).decode(),
            )
        except EndpointConnectionError as exc:
            raise DatasetUploadError(f"S3 endpoint unreachable: {exc}", unavailable=True) from None
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise DatasetUploadError(
                f"S3 refused {target.url(name)}: {error.get('Code', '?')}: {error.get('Message', '')}".rstrip(": ")
            ) from None
        except BotoCoreError as exc:
            raise DatasetUploadError(f"S3 upload of {target.url(name)} failed: {exc}", unavailable=True) from None
        written.append(target.url(name))
    return written
