"""The resolution-record markdown format: lossless both ways, and bad files reported per file."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipai_ops import config, resolutions
from ipai_ops.registry import default_registry
from ipai_ops.resolutions import Resolution, ResolutionFormatError, dumps, load_directory, loads

ROOT = config.repo_root()
RECORDS = resolutions.record_files(ROOT / "docs" / "resolutions")

# Text a person could type in a form: any printable text and newlines, but no "\r"
# (line ends are "\n") and no line that is one of the record's own section headings.
_line = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=40)
_body = (
    st.lists(_line, max_size=6)
    .map("\n".join)
    .filter(
        lambda body: (
            not any(line.rstrip() in {f"## {n}" for n, _a in resolutions.SECTIONS} for line in body.split("\n"))
        )
    )
)
_word = st.text(st.characters(blacklist_categories=("Cs", "Z", "Cc")), min_size=1, max_size=30)
_one_line = _line


_instants = st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9000, 1, 1)).map(
    lambda d: d.replace(microsecond=0)
)


@st.composite
def records(draw):
    start = draw(st.none() | _instants)
    end = None
    if start is not None and draw(st.booleans()):
        end = start + draw(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3000)))
    return Resolution(
        id=draw(st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,60}\Z")),
        code=draw(st.from_regex(r"\A[A-Z][A-Z0-9_]{0,8}(\.[A-Z][A-Z0-9_]{0,8}){1,2}\Z")),
        title=draw(_line.filter(lambda s: s.strip())),
        stage=draw(st.sampled_from(resolutions.STAGES)),
        status=draw(st.sampled_from(resolutions.STATUSES)),
        fingerprints=tuple(draw(st.lists(_word.filter(lambda w: not any(c.isspace() for c in w)), unique=True))),
        pr=draw(st.sampled_from(["", "https://github.com/o/r/pull/7", "http://example.test/a b".replace(" ", "")])),
        resolved_in_version=draw(_one_line),
        regression_test=draw(_one_line),
        date=draw(st.sampled_from(["", "2026-11-22", "1999-01-31"])),
        author=draw(_one_line),
        owner=draw(_one_line),
        incident_start=start.strftime("%Y-%m-%d %H:%M:%S") if start else "",
        incident_end=end.strftime("%Y-%m-%d %H:%M:%S") if end else "",
        **{attr: draw(_body) for _name, attr in resolutions.SECTIONS},
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records())
def test_record_to_markdown_to_record_is_identity(record):
    text = dumps(record)
    assert loads(text) == record
    # The front matter is plain YAML any reader takes, and the gate's reader sees the code.
    front = yaml.safe_load(text.split("---\n", 2)[1])
    assert str(front["code"]) == record.code


@settings(max_examples=300, deadline=None)
@given(records())
def test_markdown_to_record_to_markdown_is_identity(record):
    text = dumps(record)
    assert dumps(loads(text)) == text


def test_the_repository_has_records():
    assert RECORDS, "docs/resolutions holds no record"


@pytest.mark.parametrize("path", RECORDS, ids=lambda p: p.name)
def test_real_records_round_trip_byte_for_byte(path):
    text = path.read_text(encoding="utf-8")
    record = loads(text, source=str(path))
    assert dumps(record) == text
    assert loads(dumps(record)) == record
    # The file is where the gate and the template say: <YYYY>/<MM>/<id>.md, dated as filed.
    assert path.stem == record.id
    assert path.parent.name == record.id[5:7] and path.parent.parent.name == record.id[:4]
    assert default_registry().get(record.code) is not None


@pytest.mark.parametrize("path", RECORDS, ids=lambda p: p.name)
def test_every_field_of_a_real_record_survives_a_change(path):
    """Change each field of a real record: the change, and only it, comes back."""
    record = loads(path.read_text(encoding="utf-8"))
    changes = {
        "title": "a new title: with a colon # and a hash",
        "stage": "review",
        "status": "mitigated",
        "fingerprints": ("fp1:abc", "fp1:def"),
        "pr": "https://github.com/o/r/pull/9",
        "resolved_in_version": "1.10",
        "regression_test": "tests/x.py::test_y[param-1]",
        "date": "2026-01-02",
        "author": "@octo cat",
        "owner": "admin",
        "incident_start": "2026-01-01 10:00:00",
        "incident_end": "2026-01-01 11:00:00",
        "summary": "line one\n\n  indented\n",
        "follow_ups": "- [x] done\n- [ ] not yet",
    }
    for field, value in changes.items():
        changed = dataclasses.replace(record, **{field: value})
        assert loads(dumps(changed)) == changed, field


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_load_directory_reports_each_bad_file_and_keeps_the_good(tmp_path):
    good = Resolution(id="2026-01-01_WEBHOOK.SIGNATURE_INVALID_a", code="WEBHOOK.SIGNATURE_INVALID", title="a")
    _write(tmp_path, "2026/01/good.md", dumps(good))
    _write(tmp_path, "2026/01/no-front.md", "# WEBHOOK.SIGNATURE_INVALID: a\n\n## Summary\n")
    unknown = dataclasses.replace(good, id="u", code="NOT.A_CODE")
    _write(tmp_path, "2026/01/unknown.md", dumps(unknown))
    dup = dataclasses.replace(good, id="twin", title="one")
    _write(tmp_path, "2026/01/twin-a.md", dumps(dup))
    _write(tmp_path, "2026/01/twin-b.md", dumps(dataclasses.replace(dup, title="two")))
    _write(tmp_path, "2026/01/big.md", dumps(dataclasses.replace(good, id="big", summary="x" * 600)))
    _write(
        tmp_path, "2026/01/commented.md", dumps(dataclasses.replace(good, id="c")).replace("---\nid:", "---\n# hi\nid:")
    )
    _write(tmp_path, "2026/01/bad-yaml.md", "---\nid: [unclosed\n---\n")
    _write(
        tmp_path, "2026/01/extra.md", dumps(dataclasses.replace(good, id="e")).replace("---\nid:", "---\nfoo: x\nid:")
    )
    _write(tmp_path, "_template.md", "not a record")
    (tmp_path / "2026/01/latin1.md").write_bytes(b"---\nid: \xe9\n---\n")

    loaded, problems = load_directory(
        tmp_path, known_codes={"WEBHOOK.SIGNATURE_INVALID"}, max_bytes=len(dumps(good)) + 300
    )
    assert [item.path for item in loaded] == ["2026/01/good.md"]
    assert loaded[0].record == good
    messages = {p.path: p.message for p in problems}
    assert set(messages) == {
        "2026/01/no-front.md",
        "2026/01/unknown.md",
        "2026/01/twin-a.md",
        "2026/01/twin-b.md",
        "2026/01/big.md",
        "2026/01/commented.md",
        "2026/01/bad-yaml.md",
        "2026/01/extra.md",
        "2026/01/latin1.md",
    }
    assert messages["2026/01/no-front.md"].startswith("no front matter")
    assert "unknown failure code NOT.A_CODE" in messages["2026/01/unknown.md"]
    assert messages["2026/01/twin-a.md"] == "duplicate id twin: also used by 2026/01/twin-b.md"
    assert "-byte limit" in messages["2026/01/big.md"]
    assert "not in canonical form" in messages["2026/01/commented.md"]
    assert "invalid YAML front matter" in messages["2026/01/bad-yaml.md"]
    assert "unknown front matter field(s) foo" in messages["2026/01/extra.md"]
    assert "not UTF-8" in messages["2026/01/latin1.md"]


def test_missing_directory_is_one_problem(tmp_path):
    loaded, problems = load_directory(tmp_path / "nope")
    assert loaded == [] and [p.message for p in problems] == ["the resolutions directory does not exist"]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"code": "lower.case"}, "not a dotted failure code"),
        ({"title": "two\nlines"}, "one non-empty line"),
        ({"stage": "closed"}, "stage 'closed'"),
        ({"pr": "not a url"}, "http(s) URL"),
        ({"date": "22/11/2026"}, "YYYY-MM-DD"),
        ({"incident_start": "2026-01-02 00:00:00", "incident_end": "2026-01-01 00:00:00"}, "before incident_start"),
        ({"fix": "a\n## Evidence\nb"}, "starts a section of its own"),
        ({"fingerprints": ("a", "a")}, "listed twice"),
    ],
)
def test_invalid_records_are_refused_with_the_reason(change, reason):
    record = dataclasses.replace(Resolution(id="x", code="A.B", title="t"), **change)
    with pytest.raises(ResolutionFormatError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        dumps(record)


def test_a_section_out_of_order_is_named():
    text = dumps(Resolution(id="x", code="A.B", title="t", fix="f", evidence="e"))
    fix, evidence = "\n## Fix\n\nf\n", "\n## Evidence\n\ne\n"
    swapped = text.replace(fix + evidence, evidence + fix)
    assert swapped != text
    with pytest.raises(ResolutionFormatError, match=r"swapped\.md: '## Evidence' is out of place"):
        loads(swapped, source="swapped.md")
    with pytest.raises(ResolutionFormatError, match="section '## Follow-ups' is missing"):
        loads(text.split("\n## Follow-ups")[0] + "\n", source="cut.md")
