"""The ipai-ops command as a new user meets it: clear one-line errors, no tracebacks."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest

from ipai_ops import cli


def ipai_ops(*args: str, stdin: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ipai_ops", *args],
        capture_output=True,
        text=True,
        input=stdin,
        check=False,
        env=env,
    )


@pytest.mark.parametrize(
    "args",
    [
        ("db", "migrate", "--dsn", "postgresql://nobody@127.0.0.1:1/nope"),
        ("db", "status", "--dsn", "postgresql://nobody@127.0.0.1:1/nope"),
        ("errors", "list", "--dsn", "postgresql://nobody@127.0.0.1:1/nope"),
    ],
)
def test_unreachable_database_is_one_line_exit_3(args):
    result = ipai_ops(*args)
    assert result.returncode == 3
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ipai-ops: error: TRANSPORT.DATABASE_UNAVAILABLE:")


def _parser_with_one_command(handler):
    """ipai-ops' parser reduced to one ``probe`` command running ``handler``: for what a
    command does with the database mid-way, which no shipped command fails on demand."""

    def build():
        parser = argparse.ArgumentParser(prog="ipai-ops")
        commands = parser.add_subparsers(dest="command", required=True)
        commands.add_parser("probe").set_defaults(handler=handler)
        return parser

    return build


def _connect_to_a_closed_port(_args):
    # raw psycopg2, as a connection that went away mid-command raises it (not store.connect's error)
    psycopg2.connect("postgresql://nobody@127.0.0.1:1/nope", connect_timeout=3)


def _use_a_closed_connection(dsn):
    def handler(_args):
        conn = psycopg2.connect(dsn)
        conn.close()
        conn.cursor()  # InterfaceError: connection already closed

    return handler


@pytest.mark.parametrize("failure", ["closed port", "closed connection"])
def test_a_connection_lost_mid_command_is_typed_unavailable(failure, empty_db_dsn, monkeypatch, run_cli):
    handler = _connect_to_a_closed_port if failure == "closed port" else _use_a_closed_connection(empty_db_dsn)
    monkeypatch.setattr(cli, "build_parser", _parser_with_one_command(handler))
    result = run_cli("probe")
    assert result.code == 3, result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("ipai-ops: error: TRANSPORT.DATABASE_UNAVAILABLE: ops database unavailable: "), lines
    expected = "port 1 failed: Connection refused" if failure == "closed port" else "connection already closed"
    assert expected in lines[0]


def test_a_database_refusal_is_final_not_unavailable(empty_db_dsn, run_cli):
    result = run_cli("errors", "list", "--dsn", empty_db_dsn)  # no ops schema in it
    assert result.code == 1
    assert result.err.strip().splitlines() == [
        'ipai-ops: error: database refused the request: ERROR:  relation "ops.agent_errors" does not exist'
    ]


@pytest.mark.parametrize("command", [("db", "migrate"), ("errors", "list"), ("db", "retention", "--days", "9")])
def test_malformed_dsn_is_a_usage_error_without_its_password(command):
    result = ipai_ops(*command, "--dsn", "host=db password=hunter2xyz oops")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ipai-ops: error: invalid PostgreSQL DSN:"), lines
    assert "hunter2xyz" not in result.stderr


def test_check_dsn_redacts_what_libpq_quotes():
    from ipai_ops.store import InvalidDsn, check_dsn

    assert check_dsn("postgresql://u:pw@h/db") == "postgresql://u:pw@h/db"
    with pytest.raises(InvalidDsn) as info:
        check_dsn("dbname=ops password=hunter2xyz ==")
    assert isinstance(info.value, ValueError) and "hunter2xyz" not in str(info.value)


def test_bad_usage_exits_2_with_argparse_message():
    result = ipai_ops("errors", "list", "--since", "yesterday")
    assert result.returncode == 2 and "is not a duration like 15m, 24h or 7d" in result.stderr
    assert ipai_ops("classify").returncode == 2


def test_migrate_status_list_show_on_a_real_database(ops_dsn):
    assert ipai_ops("db", "migrate", "--dsn", ops_dsn).stdout.strip().endswith("(nothing to do)")
    status = json.loads(ipai_ops("db", "status", "--dsn", ops_dsn, "--format", "json").stdout)
    assert status["at_head"] and status["pending"] == []
    from ipai_ops import store

    conn = store.connect(ops_dsn)
    store.upsert_error(
        conn,
        store.ErrorOccurrence(
            source="cli",
            occurrence_id="1",
            fingerprint="fp1:" + "c" * 32,
            code="ENV.KEY_MISSING",
            severity="high",
            message="OPENAI_API_KEY is not set",
            occurred_at="2026-11-21T10:00:00Z",
        ),
    )
    conn.close()
    listed = ipai_ops("errors", "list", "--dsn", ops_dsn, "--code", "ENV.KEY_MISSING")
    assert "ENV.KEY_MISSING" in listed.stdout and "OPENAI_API_KEY is not set" in listed.stdout
    shown = json.loads(ipai_ops("errors", "show", "--dsn", ops_dsn, "fp1:" + "c" * 32).stdout)
    assert shown["count"] == 1 and shown["recent_occurrences"][0]["occurrence_id"] == "1"
    missing = ipai_ops("errors", "show", "--dsn", ops_dsn, "424242")
    assert missing.returncode == 1 and "no error with id or fingerprint" in missing.stderr


def test_classify_reports_code_signature_and_fingerprint():
    result = ipai_ops(
        "classify",
        "--format",
        "json",
        "--type",
        "psycopg2.OperationalError",
        "--message",
        'connection to server at "db", port 5432 failed: Connection refused',
    )
    out = json.loads(result.stdout)
    assert out["code"] == "TRANSPORT.DATABASE_UNAVAILABLE" and out["matched_by"] == "signature"
    assert out["retryable"] is True and out["fingerprint"].startswith("fp1:")
    text = ipai_ops("classify", "--text-file", "-", stdin="Error: Process completed with exit code 1.\n")
    assert text.returncode == 0


def test_envelope_validate(tmp_path: Path):
    good = tmp_path / "good.json"
    from ipai_ops.classify import classify
    from ipai_ops.envelope import build_envelope
    from ipai_ops.registry import load_registry

    env = build_envelope(classify(load_registry(), message="x"), message="x", context={"source": "cli", "service": "t"})
    good.write_text(json.dumps(env))
    assert ipai_ops("envelope", "validate", str(good)).returncode == 0
    env["error"]["code"] = "lowercase"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(env))
    result = ipai_ops("envelope", "validate", str(bad))
    assert result.returncode == 1 and "/error/code" in result.stderr
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    result = ipai_ops("envelope", "validate", str(broken))
    assert result.returncode == 2 and "not JSON" in result.stderr and "Traceback" not in result.stderr
    assert ipai_ops("envelope", "validate", str(tmp_path / "absent.json")).returncode == 2
    binary = tmp_path / "binary.json"
    binary.write_bytes(b'{"envelope_version": "\xd0\x00')
    result = ipai_ops("envelope", "validate", str(binary))
    assert result.returncode == 2 and "not JSON" in result.stderr and "Traceback" not in result.stderr


def test_invalid_registry_is_reported_not_raised(tmp_path: Path):
    bad = tmp_path / "failure_modes.yaml"
    bad.write_text("schema_version: 1\nfailure_modes:\n  - code: nope\n")
    result = ipai_ops("classify", "--registry", str(bad), "--message", "x")
    assert result.returncode == 1 and "CI.SSOT_INVALID" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("kwargs", "good", "bad"),
    [
        ({"low": 0, "low_open": True, "unit": "seconds"}, ["0.5", "1e3"], ["0", "-1", "nan", "inf", "x"]),
        ({"low": 0.5, "high": 1, "high_open": True}, ["0.5", "0.95"], ["1", "0.4", "nan"]),
        ({"low": 0, "high": 1}, ["0", "1"], ["1.01", "-0.1"]),
    ],
)
def test_float_in_accepts_the_interval_only(kwargs, good, bad):
    import argparse

    from ipai_ops.cli import float_in

    parse = float_in(**kwargs)
    assert [parse(text) for text in good] == [float(text) for text in good]
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)
