"""The PR gates on passing and failing inputs, through the real CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ipai_ops.classify import classify

GOOD_BODY = """\
## What

<!-- PR template: keep the four sections below. -->

[CONTEXT]
The bridge answered 500 while PostgreSQL restarted, so the collector dropped spans.

[CHANGES]
- answer 503 with Retry-After when the database is unreachable

**[EVIDENCE]**
```
$ pytest tests/bridge -q
[CONTEXT] inside a code fence is not a section header
12 passed in 3.10s
```

## [DIFF SUMMARY]
2 files changed, 40 insertions(+), 3 deletions(-)

[ROLLBACK]
Revert the commit; nothing to migrate.
"""


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return str(path)


# --------------------------------------------------------------------------- evidence-block


def test_evidence_block_passes(run_cli, tmp_path):
    result = run_cli("gate", "evidence-block", _write(tmp_path, "body.md", GOOD_BODY))
    assert result.code == 0, result.err
    assert result.out.startswith("ok: evidence-block passed")


def test_evidence_block_accepts_crlf_and_no_rollback(run_cli, tmp_path):
    body = "[CONTEXT]\r\nwhy\r\n[CHANGES]\r\nwhat\r\n[EVIDENCE]\r\nproof\r\n[DIFF SUMMARY]\r\n1 file\r\n"
    assert run_cli("gate", "evidence-block", _write(tmp_path, "b.md", body)).code == 0


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("[CONTEXT]\nwhy\n[CHANGES]\nwhat\n[DIFF SUMMARY]\n1 file\n", ["b.md: missing section [EVIDENCE]"]),
        (
            "[CONTEXT]\nwhy\n[CHANGES]\n<!-- describe -->\n\n[EVIDENCE]\nok\n[DIFF SUMMARY]\nx\n",
            ["b.md:3: [CHANGES] is empty"],
        ),
        (
            "[CHANGES]\nwhat\n[CONTEXT]\nwhy\n[EVIDENCE]\nok\n[DIFF SUMMARY]\nx\n",
            ["b.md:1: [CHANGES] is out of order: it must come after [CONTEXT] (line 3)"],
        ),
        (
            "[CONTEXT]\na\n[CHANGES]\nb\n[EVIDENCE]\nc\n[DIFF SUMMARY]\nd\n[EVIDENCE]\ne\n",
            ["b.md:9: [EVIDENCE] appears twice (first at line 5)"],
        ),
        (
            "",
            [f"b.md: missing section [{s}]" for s in ("CONTEXT", "CHANGES", "EVIDENCE", "DIFF SUMMARY")],
        ),
    ],
    ids=["missing", "empty-comment-only", "out-of-order", "duplicate", "empty-body"],
)
def test_evidence_block_fails_with_line_and_reason(run_cli, tmp_path, body, expected):
    path = _write(tmp_path, "b.md", body)
    result = run_cli("gate", "evidence-block", path)
    assert result.code == 1
    lines = result.err.strip().splitlines()
    assert [line.replace(str(tmp_path) + "/", "") for line in lines[:-1]] == expected
    assert lines[-1].startswith("CI.EVIDENCE_BLOCK_INVALID: ")


def test_evidence_block_json_and_classification(run_cli, tmp_path, registry):
    path = _write(tmp_path, "b.md", "[CONTEXT]\nwhy\n")
    result = run_cli("gate", "evidence-block", path, "--format", "json")
    assert result.code == 1
    report = json.loads(result.out)
    assert report["ok"] is False and report["failure_code"] == "CI.EVIDENCE_BLOCK_INVALID"
    assert [p["message"] for p in report["problems"]] == [
        "missing section [CHANGES]",
        "missing section [EVIDENCE]",
        "missing section [DIFF SUMMARY]",
    ]
    # The gate's own words classify as its code when a failed CI log is ingested.
    for problem in report["problems"]:
        assert classify(registry, text=problem["message"]).code == "CI.EVIDENCE_BLOCK_INVALID"


def test_evidence_block_unreadable_file_is_usage_error(run_cli, tmp_path):
    result = run_cli("gate", "evidence-block", str(tmp_path / "nope.md"))
    assert result.code == 2
    assert "cannot read PR body" in result.err and "Traceback" not in result.err


# --------------------------------------------------------------------------- resolution-ref

CODE = "WEBHOOK.SIGNATURE_INVALID"
RECORD = f"docs/resolutions/2026/03/2026-03-14_{CODE}_hmac-clock-skew.md"
RECORD_TEXT = f"""---
code: {CODE}
fingerprints:
  - fp1:0123456789abcdef0123456789abcdef
status: resolved
pr: https://github.com/acme/shop/pull/77
date: 2026-03-14
---

# {CODE}: signatures failed after the proxy re-encoded bodies
"""


def _event(tmp_path: Path, *, title: str, body: str = "", branch: str = "feature/x") -> str:
    event = {"pull_request": {"number": 77, "title": title, "body": body, "head": {"ref": branch}}}
    return _write(tmp_path, "event.json", json.dumps(event))


def test_resolution_ref_passes_with_existing_record(run_cli, tmp_path):
    _write(tmp_path / "repo", RECORD, RECORD_TEXT)
    event = _event(tmp_path, title=f"fix({CODE}): accept re-encoded bodies", body=f"Resolution: {RECORD}")
    result = run_cli("gate", "resolution-ref", "--event", event, "--repo-root", str(tmp_path / "repo"))
    assert result.code == 0, result.err


def test_resolution_ref_not_needed_when_no_code_is_claimed(run_cli, tmp_path):
    # "fixes README.MD" has a code's shape but the registry does not know it.
    event = _event(tmp_path, title="docs: fixes README.MD typo", body="Fixes #12")
    result = run_cli("gate", "resolution-ref", "--event", event, "--repo-root", str(tmp_path), "--format", "json")
    assert result.code == 0
    report = json.loads(result.out)
    assert report["claimed_codes"] == {} and report["ignored_code_like"] == ["README.MD"]


@pytest.mark.parametrize(
    "case",
    [
        (f"fix({CODE}): x", "", "feature/x", f"resolution record missing for {CODE}: the title says"),
        ("Retry deliveries", f"This fixes {CODE}.", "feature/x", f"resolution record missing for {CODE}: the body"),
        ("Retry", "", "fix/webhook.signature_invalid-clock-skew", "the branch says it fixes"),
        (f"fix({CODE})", f"see {RECORD}", "x", "resolution record not found: " + RECORD),
    ],
    ids=["title", "body", "branch", "record-absent"],
)
def test_resolution_ref_fails(run_cli, tmp_path, case):
    title, body, branch, expected = case
    event = _event(tmp_path, title=title, body=body, branch=branch)
    result = run_cli("gate", "resolution-ref", "--event", event, "--repo-root", str(tmp_path))
    assert result.code == 1
    assert expected in result.err
    assert result.err.strip().splitlines()[-1].startswith("CI.RESOLUTION_REF_MISSING: ")


def test_resolution_ref_record_must_name_the_code(run_cli, tmp_path, registry):
    _write(tmp_path, RECORD, RECORD_TEXT.replace(f"code: {CODE}", "code: WEBHOOK.TIMESTAMP_STALE"))
    event = _event(tmp_path, title=f"fix({CODE})", body=RECORD)
    result = run_cli("gate", "resolution-ref", "--event", event, "--repo-root", str(tmp_path), "--format", "json")
    assert result.code == 1
    (problem,) = json.loads(result.out)["problems"]
    assert problem["message"] == (
        f"resolution record for {CODE} is invalid: its front matter says code: WEBHOOK.TIMESTAMP_STALE"
    )


def test_resolution_ref_record_dated_in_the_wrong_folder(run_cli, tmp_path):
    wrong = RECORD.replace("2026/03/", "2026/04/")
    _write(tmp_path, wrong, RECORD_TEXT)
    event = _event(tmp_path, title=f"fix({CODE})", body=wrong)
    result = run_cli("gate", "resolution-ref", "--event", event, "--repo-root", str(tmp_path))
    assert result.code == 1
    assert "filed under 2026/04 but dated 2026-03-14" in result.err


def test_resolution_ref_flags_and_classification(run_cli, tmp_path, registry):
    result = run_cli("gate", "resolution-ref", "--title", f"fix({CODE})", "--repo-root", str(tmp_path))
    assert result.code == 1
    first = result.err.splitlines()[0]
    assert classify(registry, text=first).code == "CI.RESOLUTION_REF_MISSING"
    nothing = run_cli("gate", "resolution-ref", "--repo-root", str(tmp_path))
    assert nothing.code == 2 and "nothing to check" in nothing.err


def test_shipped_example_record_passes(run_cli, tmp_path):
    root = Path(__file__).resolve().parents[2]
    records = sorted((root / "docs" / "resolutions" / "2026").rglob("*.md"))
    assert records, "the example resolution record is missing"
    rel = records[0].relative_to(root).as_posix()
    code = re.search(r"^code: (\S+)$", records[0].read_text(), re.M).group(1)
    assert f"_{code}_" in rel
    body = _write(tmp_path, "body.md", f"[CONTEXT]\nResolution record: {rel}\n")
    result = run_cli(
        "gate", "resolution-ref", "--title", f"fix({code}): example", "--body-file", body, "--repo-root", str(root)
    )
    assert result.code == 0, result.err


# --------------------------------------------------------------------------- dns-placeholders

DNS_OK = """\
schema_version: 1
records:
  - zone: example.com
    name: erp
    type: A
    value: 192.0.2.10
    lifecycle: active
    owner: sre
  - zone: example.com
    name: new
    type: A
    value: <NEW_HOST_IP>
    lifecycle: planned
    owner: sre
"""


def test_dns_placeholders_passes_for_planned_placeholders(run_cli, tmp_path):
    assert run_cli("gate", "dns-placeholders", _write(tmp_path, "dns.yaml", DNS_OK)).code == 0


def test_shipped_dns_registry_passes(run_cli):
    root = Path(__file__).resolve().parents[2]
    result = run_cli("gate", "dns-placeholders", str(root / "ssot" / "dns" / "registry.yaml"))
    assert result.code == 0, result.err


def test_dns_placeholder_in_active_record_fails(run_cli, tmp_path, registry):
    text = DNS_OK.replace("lifecycle: planned", "lifecycle: active").replace(
        "owner: sre\n  - zone", "owner: <TEAM>\n  - zone", 1
    )
    path = _write(tmp_path, "dns.yaml", text)
    result = run_cli("gate", "dns-placeholders", path, "--format", "json")
    assert result.code == 1
    report = json.loads(result.out)
    assert report["failure_code"] == "DNS.PLACEHOLDER_ACTIVE"
    assert [(p["line"], p["message"]) for p in report["problems"]] == [
        (
            3,
            "record erp.example.com A is active but owner holds placeholder <TEAM>: publish the real value "
            "or set lifecycle: planned",
        ),
        (
            9,
            "record new.example.com A is active but value holds placeholder <NEW_HOST_IP>: publish the real "
            "value or set lifecycle: planned",
        ),
    ]
    assert classify(registry, text=report["problems"][0]["message"]).code == "DNS.PLACEHOLDER_ACTIVE"


def test_dns_registry_schema_and_yaml_errors(run_cli, tmp_path):
    typo = _write(tmp_path, "typo.yaml", DNS_OK.replace("lifecycle: planned", "lifecyle: planned"))
    result = run_cli("gate", "dns-placeholders", typo)
    assert result.code == 1
    assert "typo.yaml:9: schema: records/1: 'lifecycle' is a required property" in result.err
    broken = _write(tmp_path, "broken.yaml", "records: [\n")
    result = run_cli("gate", "dns-placeholders", broken)
    assert result.code == 1 and "invalid YAML" in result.err
