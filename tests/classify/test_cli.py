"""`ipai-ops classify` and `ipai-ops classify eval`: output, bad input, floors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

CORPUS = Path(__file__).resolve().parent / "corpus"

LOG = "\n".join(
    [
        "2024-05-01T10:00:00.0000000Z ##[group]Run pytest -q",
        "2024-05-01T10:00:01.0000000Z ..F.",
        "2024-05-01T10:00:02.0000000Z FAILED tests/test_api.py::test_create - AssertionError: 500 != 201",
        "2024-05-01T10:00:02.0000000Z ========= 1 failed, 3 passed in 0.52s =========",
        "2024-05-01T10:00:03.0000000Z ##[error]Process completed with exit code 1.",
    ]
)


def test_text_output_shows_the_deciding_lines_with_their_numbers(run_cli, tmp_path):
    path = tmp_path / "job.log"
    path.write_text(LOG)
    result = run_cli("classify", "--text-file", str(path))
    assert result.code == 0, result.err
    assert result.out.splitlines()[0].startswith("BUILD.TEST_FAILED  family test  (signature ")
    assert "       3 | FAILED tests/test_api.py::test_create - AssertionError: 500 != 201" in result.out
    assert "       5 | Process completed with exit code 1.   (marker)" in result.out
    assert "captures: command=pytest -q, exit_code=1, test=tests/test_api.py::test_create" in result.out


def test_json_output_carries_family_evidence_captures_and_input_size(run_cli, tmp_path):
    path = tmp_path / "job.log"
    path.write_text(LOG)
    out = json.loads(run_cli("classify", "--text-file", str(path), "--format", "json").out)
    assert (out["code"], out["family"], out["matched_by"]) == ("BUILD.TEST_FAILED", "test", "signature")
    assert [e["line"] for e in out["evidence"]] == [3, 4, 5]
    assert out["captures"]["test"] == "tests/test_api.py::test_create"
    assert out["input"] == {"bytes": len(LOG), "lines_read": 5, "lines_skipped": 0, "invalid_utf8_bytes": 0}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the text is empty: nothing to classify"),
        (b"\n \n\t\n", "the text is empty: nothing to classify"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(300), "input looks binary (a NUL byte at offset 8)"),
    ],
)
def test_bad_input_gets_one_line_and_exit_2(run_cli, tmp_path, content, message):
    path = tmp_path / "input.bin"
    path.write_bytes(content)
    result = run_cli("classify", "--text-file", str(path))
    assert result.code == 2 and result.err.count("\n") == 1 and message in result.err


def test_missing_file_and_no_input(run_cli, tmp_path):
    result = run_cli("classify", "--text-file", str(tmp_path / "nope.log"))
    assert result.code == 2 and "cannot read text file" in result.err
    assert run_cli("classify").code == 2


def test_a_large_non_utf8_log_is_read_head_and_tail_with_a_note(run_cli, tmp_path):
    path = tmp_path / "big.log"
    with open(path, "wb") as handle:
        handle.write("caf\xe9\n".encode("latin-1"))
        handle.write(b"noise line\n" * 300_000)
        handle.write(b"npm ERR! code E404\n")
    result = run_cli("classify", "--text-file", str(path))
    assert result.code == 0 and result.out.startswith("DEPENDENCY.PACKAGE_NOT_FOUND")
    assert "  300002 | npm ERR! code E404" in result.out  # the file's own line number
    assert "lines skipped" in result.out and "1 byte was not UTF-8" in result.out


def _corpus(tmp_path: Path, cases: list[dict], files: dict[str, str] | None = None) -> Path:
    for name, text in (files or {}).items():
        (tmp_path / name).write_text(text)
    path = tmp_path / "cases.jsonl"
    path.write_text("\n".join(json.dumps(c) for c in cases) + "\n")
    return path


def test_eval_reports_every_figure(run_cli, tmp_path):
    corpus = _corpus(
        tmp_path,
        [
            {
                "id": "a",
                "file": "job.log",
                "code": "BUILD.TEST_FAILED",
                "evidence": [3],
                "kind": "ci_log",
                "source": "https://github.com/o/one",
            },
            {
                "id": "b",
                "text": "npm ERR! code E404",
                "family": "dependency",
                "evidence": [1],
                "kind": "tool_output",
                "source": "https://github.com/o/two",
            },
            {"id": "c", "text": "all good: 12 passed", "family": "none", "kind": "none", "source": "x"},
            {
                "id": "d",
                "text": "IndexError: list index out of range",
                "expected_family": "runtime",
                "kind": "ops",
                "source": "y",
            },
        ],
        {"job.log": LOG},
    )
    result = run_cli("classify", "eval", str(corpus), "--format", "json", "--misses", "5")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    figures = report["figures"]["all"]
    assert figures["cases"] == 4 and figures["failures"] == 3 and figures["none_cases"] == 1
    assert figures["family_accuracy"] == round(2 / 3, 4) and figures["fallback_rate"] == round(1 / 3, 4)
    assert figures["false_positive_rate"] == 0 and figures["evidence_hit_rate"] == 1
    assert figures["confusion"]["runtime"] == {"none": 1}
    assert [m["id"] for m in report["misses"]] == ["d"]
    text = run_cli("classify", "eval", str(corpus)).out
    assert "per family (all)" in text and "confusion (rows: expected, columns: answered)" in text


def test_eval_floors_fail_with_exit_1(run_cli, tmp_path):
    corpus = _corpus(tmp_path, [{"text": "IndexError: boom", "family": "runtime"}])
    result = run_cli("classify", "eval", str(corpus), "--min-family-accuracy", "0.5")
    assert result.code == 1 and "floor failed: family_accuracy 0.000 < 0.500" in result.err


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{not json", "not JSON"),
        ('{"text": "x"}', "give 'family' or 'code'"),
        ('{"text": "x", "file": "y", "family": "test"}', "exactly one of 'text' and 'file'"),
        ('{"text": "x", "code": "NOPE.CODE"}', "code 'NOPE.CODE' is not in the registry"),
        ('{"text": "x", "family": "weather"}', "family 'weather' is not one of"),
        ('{"text": "x", "family": "test", "evidence": [0]}', "1-based line numbers"),
        ('{"file": "../missing.log", "family": "test"}', "file ../missing.log does not exist"),
    ],
)
def test_eval_refuses_a_bad_corpus_with_the_line_and_the_reason(run_cli, tmp_path, line, problem):
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n")
    result = run_cli("classify", "eval", str(path))
    assert result.code == 2 and f"{path}:1: " in result.err and problem in result.err


def test_the_development_corpus_is_large_real_and_sourced():
    from ipai_ops.classify import evaluate
    from ipai_ops.registry import load_registry

    cases = evaluate.load_corpus(CORPUS, load_registry())
    assert len(cases) >= 400
    assert len({c.ecosystem for c in cases}) >= 20
    raw = [json.loads(line) for path in CORPUS.glob("*.jsonl") for line in path.read_text().splitlines()]
    assert all(c.get("source") and c.get("licence") for c in raw)
    assert all(c["licence"] != "NOASSERTION" for c in raw)
