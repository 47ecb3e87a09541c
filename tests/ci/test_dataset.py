"""Dataset export: records, preference pairs, redaction, deterministic bytes and split, streaming."""

from __future__ import annotations

import hashlib
import json
import tracemalloc
import uuid
from pathlib import Path

import jsonschema
import pytest

from ipai_ops.ci.dataset import (
    SCHEMAS,
    DatasetRecordInvalid,
    ExportSettings,
    export_dataset,
    schema,
    schema_errors,
    split_of,
)

SECRET = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"


def _run(
    cur,
    run_id: str,
    *,
    task: str | None,
    composite: float | None,
    variant: str = "A",
    prompt: str | None = "Fix the webhook",
    status: str = "succeeded",
) -> None:
    metadata = {
        "variant_id": variant,
        "prompt": prompt,
        "context": {"files": ["a.py"]},
        "patch": f"--- a/a.py\n+++ b/a.py\n@@ -1 +1 @@\n-x = 1\n+x = 2  # {run_id}\n",
    }
    cur.execute(
        "INSERT INTO ops.agent_runs (run_id, agent, task_ref, status, started_at, metadata) "
        "VALUES (%s, 'coder', %s, %s, '2026-03-14T10:00:00Z', %s)",
        (run_id, task, status, json.dumps(metadata)),
    )
    if composite is not None:
        cur.execute(
            "INSERT INTO ops.agent_benchmark_results (subject, run_id, variant_id, category, score, weight, "
            "composite, tier) VALUES (%s, %s, %s, 'evidence', %s, 1, %s, 'baseline')",
            (f"run:{run_id}", run_id, variant, composite, composite),
        )


@pytest.fixture
def seeded(ops_conn):
    with ops_conn, ops_conn.cursor() as cur:
        for task in range(30):
            _run(cur, f"r{task:02d}a", task=f"T-{task}", composite=80.0)
            _run(cur, f"r{task:02d}b", task=f"T-{task}", composite=60.0, variant="B")
            _run(cur, f"r{task:02d}c", task=f"T-{task}", composite=78.0, variant="B")  # within margin of 80
        _run(cur, "lonely", task=None, composite=None)
        _run(cur, "no-prompt", task="T-0", composite=None, prompt=None)
        # A secret in the prompt and a DSN password in the context must not leave the database.
        cur.execute(
            "UPDATE ops.agent_runs SET metadata = metadata || %s WHERE run_id = 'r00a'",
            (
                json.dumps(
                    {
                        "prompt": f"use token {SECRET} to push",
                        "context": {"dsn": "postgresql://odoo:hunter2@db/odoo", "api_key": "abc123"},
                    }
                ),
            ),
        )
    return ops_conn


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_export_records_pairs_and_manifest(run_cli, seeded, ops_dsn, tmp_path):
    out = tmp_path / "ds"
    result = run_cli(
        "export", "dataset", "--out", str(out), "--dsn", ops_dsn, "--format", "json", "--eval-fraction", "0.3"
    )
    assert result.code == 0, result.err
    manifest = json.loads(result.out)
    counts = manifest["counts"]
    assert counts["rows_read"] == 92 and counts["skipped_incomplete"] == 1
    assert counts["records"]["train"] + counts["records"]["eval"] == 91
    # Per task: 80 > 60 and 78 > 60 clear the 5-point margin; 80 vs 78 does not.
    assert counts["pairs"]["train"] + counts["pairs"]["eval"] == 60
    assert 0 < counts["records"]["eval"] < counts["records"]["train"]
    assert manifest["files"].keys() == {
        "eval.jsonl",
        "preferences_eval.jsonl",
        "preferences_train.jsonl",
        "train.jsonl",
    }
    for name, info in manifest["files"].items():
        data = (out / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == info["sha256"]
        assert data.count(b"\n") == info["lines"]
    assert json.loads((out / "manifest.json").read_text()) == manifest

    records = [json.loads(line) for f in ("train.jsonl", "eval.jsonl") for line in (out / f).open()]
    # A task's runs never straddle the split.
    splits_by_task: dict[str, set[str]] = {}
    for r in records:
        splits_by_task.setdefault(r["task"] or r["id"], set()).add(r["split"])
        assert r["split"] == split_of(r["task"] or f"run:{r['id']}", salt=manifest["split"]["salt"], eval_fraction=0.3)
    assert all(len(s) == 1 for s in splits_by_task.values())
    first = next(r for r in records if r["id"] == "r00a")
    assert set(first) >= {"prompt", "context", "patch", "outcome"}
    assert first["outcome"] == {
        "status": "succeeded",
        "error_code": None,
        "duration_ms": None,
        "composite": 80.0,
        "tier": "baseline",
        "scores": {"evidence": 80.0},
    }
    pair = json.loads((out / "preferences_train.jsonl").open().readline())
    assert pair["chosen"]["composite"] - pair["rejected"]["composite"] >= 5
    assert pair["chosen"]["id"] != pair["rejected"]["id"]
    # Every line and the manifest satisfy the published schemas (checked here independently).
    pairs = [
        json.loads(line) for f in ("preferences_train.jsonl", "preferences_eval.jsonl") for line in (out / f).open()
    ]
    assert len(records) == 91 and len(pairs) == 60
    for name, documents in (("record", records), ("preference_pair", pairs), ("manifest", [manifest])):
        validator = jsonschema.Draft202012Validator(schema(name))
        assert all(validator.is_valid(d) for d in documents), name
    assert manifest["schemas"] == SCHEMAS


def test_secrets_are_redacted(run_cli, seeded, ops_dsn, tmp_path):
    out = tmp_path / "ds"
    assert run_cli("export", "dataset", "--out", str(out), "--dsn", ops_dsn).code == 0
    everything = b"".join(_files(out).values()).decode()
    assert SECRET not in everything
    assert "hunter2" not in everything and "abc123" not in everything
    assert "[REDACTED:token]" in everything
    assert "postgresql://odoo:[REDACTED:password]@db/odoo" in everything


def test_two_exports_are_byte_identical(run_cli, seeded, ops_dsn, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert run_cli("export", "dataset", "--out", str(one), "--dsn", ops_dsn).code == 0
    assert run_cli("export", "dataset", "--out", str(two), "--dsn", ops_dsn).code == 0
    assert _files(one) == _files(two)
    # A different salt draws a different split; the same salt always the same one.
    three = tmp_path / "three"
    assert run_cli("export", "dataset", "--out", str(three), "--dsn", ops_dsn, "--salt", "other").code == 0
    assert _files(three)["train.jsonl"] != _files(one)["train.jsonl"]


def test_filters(run_cli, seeded, ops_dsn, tmp_path):
    result = run_cli(
        "export", "dataset", "--out", str(tmp_path / "b"), "--dsn", ops_dsn, "--variant", "B", "--format", "json"
    )
    manifest = json.loads(result.out)
    assert manifest["filters"]["variant"] == "B"
    assert manifest["counts"]["rows_read"] == 60


def test_streaming_keeps_memory_flat(ops_conn, tmp_path):
    # 4,000 runs, ~4 MB of output, read 200 rows at a time: Python memory must stay far below
    # the output size (a non-streaming export would hold every record).
    with ops_conn, ops_conn.cursor() as cur:
        cur.execute(
            """
            INSERT INTO ops.agent_runs (run_id, agent, task_ref, status, metadata)
            SELECT 'bulk-' || lpad(i::text, 6, '0'), 'coder', 'task-' || (i / 4), 'succeeded',
                   jsonb_build_object('prompt', 'p' || i, 'patch', repeat('+line of patch text ', 30),
                                      'context', jsonb_build_object('i', i))
            FROM generate_series(1, 4000) AS i
            """
        )
    tracemalloc.start()
    try:
        manifest = export_dataset(ops_conn, tmp_path / "big", settings=ExportSettings(), progress=False, fetch_size=200)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert manifest["counts"]["rows_read"] == 4000
    total_bytes = sum(f["bytes"] for f in manifest["files"].values())
    assert total_bytes > 3_000_000
    assert peak < total_bytes / 3, f"peak {peak / 1e6:.1f} MB for {total_bytes / 1e6:.1f} MB written"


def test_export_unreachable_database(run_cli, tmp_path):
    result = run_cli("export", "dataset", "--out", str(tmp_path / "x"), "--dsn", "postgresql://127.0.0.1:1/nope")
    assert result.code == 3
    assert result.err.startswith("ipai-ops: error: TRANSPORT.DATABASE_UNAVAILABLE")


def test_schemas_are_valid_and_strict():
    for name in SCHEMAS:
        jsonschema.Draft202012Validator.check_schema(schema(name))
    record = {
        "id": "r1",
        "task": "T-1",
        "agent": "coder",
        "variant_id": "A",
        "started_at": "2026-03-14T10:00:00+00:00",
        "prompt": "Fix it",
        "context": None,
        "patch": "+x",
        "outcome": {
            "status": "succeeded",
            "error_code": None,
            "duration_ms": 12,
            "composite": 80.0,
            "tier": "baseline",
            "scores": {"evidence": 80.0},
        },
        "split": "train",
    }
    assert schema_errors("record", record) == []
    assert schema_errors("record", {**record, "run_id": "r1"}) == [
        "/: Additional properties are not allowed ('run_id' was unexpected)"
    ]
    assert schema_errors("record", {**record, "split": "test"}) == ["/split: 'test' is not one of ['train', 'eval']"]
    assert schema_errors("record", {**record, "prompt": {"text": "Fix it"}}) == [
        "/prompt: {'text': 'Fix it'} is not of type 'string'"
    ]


@pytest.mark.parametrize(
    "case",
    [
        ({"prompt": {"messages": ["fix"]}, "patch": "+x"}, "/prompt: {'messages': ['fix']} is not of type 'string'"),
        ({"prompt": "fix", "patch": 42}, "/patch: 42 is not of type 'string'"),
        ({"prompt": "fix", "patch": "+x", "variant_id": 7}, "/variant_id: 7 is not of type 'string', 'null'"),
    ],
)
def test_a_record_that_breaks_the_schema_is_a_typed_error_and_nothing_is_written(
    run_cli, seeded, ops_dsn, tmp_path, case
):
    metadata, expected = case
    with seeded, seeded.cursor() as cur:
        cur.execute(
            "INSERT INTO ops.agent_runs (run_id, agent, task_ref, status, metadata) VALUES ('bad-run', 'coder', 'T-9', "
            "'succeeded', %s)",
            (json.dumps(metadata),),
        )
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep.txt").write_text("earlier")
    with pytest.raises(DatasetRecordInvalid) as info:
        export_dataset(seeded, out, progress=False)
    assert info.value.run_id == "bad-run" and info.value.errors == [expected]
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]  # no partial files, no scratch directory

    result = run_cli("export", "dataset", "--out", str(out), "--dsn", ops_dsn)
    assert result.code == 1
    assert result.err.startswith(
        "ipai-ops: error: AGENT.RUN_METADATA_INVALID: run bad-run: its record breaks its schema"
    )
    assert expected in result.err and result.err.rstrip().endswith("nothing was written")
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_an_infrastructure_failure_is_never_rejected(run_cli, ops_conn, ops_dsn, tmp_path):
    with ops_conn, ops_conn.cursor() as cur:
        _run(cur, "good", task="T-1", composite=90.0)
        _run(cur, "agent-fault", task="T-1", composite=20.0, status="failed")
        _run(cur, "outage", task="T-1", composite=10.0, status="failed")
        for run_id, code in (
            ("agent-fault", "AGENT.VERIFICATION_FAILED"),
            ("outage", "TRANSPORT.DATABASE_UNAVAILABLE"),
        ):
            cur.execute(
                "INSERT INTO ops.agent_errors (code, fingerprint, source, first_seen, last_seen) "
                "VALUES (%s, %s, 'test', now(), now()) RETURNING id",
                (code, f"fp-{run_id}"),
            )
            cur.execute("UPDATE ops.agent_runs SET error_id = %s WHERE run_id = %s", (cur.fetchone()[0], run_id))
    out = tmp_path / "ds"
    result = run_cli(
        "export", "dataset", "--out", str(out), "--dsn", ops_dsn, "--eval-fraction", "0", "--format", "json"
    )
    assert result.code == 0, result.err
    pairs = [json.loads(line) for line in (out / "preferences_train.jsonl").open()]
    # good leads agent-fault by 70 and the outage by 80, agent-fault leads the outage by 10:
    # only the first is a pair, because a TRANSPORT failure is never the rejected side.
    assert [(p["chosen"]["id"], p["rejected"]["id"]) for p in pairs] == [("good", "agent-fault")]
    assert json.loads(result.out)["preferences"]["never_rejected"] == ["BUILD", "TRANSPORT"]


# --------------------------------------------------------------------------- S3 destination

# moto accepts any key pair; these are made-up test values, not credentials.
S3_KEY_ID = "AKIAIPAIOPSTESTKEY01"  # pragma: allowlist secret
S3_SECRET = "ipai-ops-test-secret-" + "x7Q2w9Zk4LmN8pR3"  # pragma: allowlist secret


@pytest.fixture
def s3(monkeypatch):
    """A real S3 API (moto's server) on loopback, an empty bucket, and the AWS_* environment set."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=S3_KEY_ID,
        aws_secret_access_key=S3_SECRET,
        region_name="us-east-1",
    )
    # moto keeps its buckets per process, not per server: a bucket of this test's own.
    bucket = f"datasets-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    try:
        yield client, bucket
    finally:
        server.stop()


def test_export_to_s3_has_the_bytes_of_the_local_export(run_cli, seeded, ops_dsn, tmp_path, s3):
    client, bucket = s3
    local = tmp_path / "local"
    assert run_cli("export", "dataset", "--out", str(local), "--dsn", ops_dsn).code == 0
    result = run_cli("export", "dataset", "--to", f"s3://{bucket}/runs/2026-03/", "--dsn", ops_dsn)
    assert result.code == 0, result.err
    prefix = f"s3://{bucket}/runs/2026-03/"
    assert f"uploaded 5 object(s) to {prefix}, manifest last: {prefix}manifest.json" in result.out
    listed = client.list_objects_v2(Bucket=bucket)["Contents"]
    remote = {
        o["Key"].removeprefix("runs/2026-03/"): client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
        for o in listed
    }
    assert remote == _files(local)
    assert S3_SECRET not in result.out + result.err and S3_KEY_ID not in result.out + result.err


def test_export_to_s3_refusals_are_one_line_and_never_print_credentials(run_cli, seeded, ops_dsn, s3, monkeypatch):
    client, bucket = s3

    def fails(code: int, *args: str) -> str:
        result = run_cli("export", "dataset", *args, "--dsn", ops_dsn)
        assert result.code == code and result.out == "", result.err
        assert S3_SECRET not in result.err and S3_KEY_ID not in result.err
        return result.err

    assert "--to: not an s3://bucket/prefix URL" in fails(2, "--to", "https://datasets/x")
    assert fails(1, "--to", "s3://datasets-missing").startswith(
        "ipai-ops: error: S3 refused s3://datasets-missing/eval.jsonl: NoSuchBucket"
    )
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:1")
    monkeypatch.setattr("ipai_ops.ci.dataset._CONNECT_TIMEOUT", 2)
    assert fails(3, "--to", f"s3://{bucket}/p").startswith("ipai-ops: error: S3 endpoint unreachable")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    assert "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in fails(1, "--to", f"s3://{bucket}/p")
    assert "Contents" not in client.list_objects_v2(Bucket=bucket)  # nothing half-uploaded
