"""Fingerprints: variable parts never change them, distinct errors never collide (property tests)."""

from __future__ import annotations

import string
import subprocess
import sys
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from ipai_ops.fingerprint import (
    FINGERPRINT_VERSION,
    fingerprint,
    frames_from_stacktrace,
    normalize_message,
)

TEMPLATES = [
    "connection to server at {ip}, port {n} failed: Connection refused",
    "intent {uuid} timed out after {n} seconds at {ts}",
    "could not open {path}: no such file",
    "key {quoted} is missing for tenant {n}",
    "object at {hex} has no attribute {quoted}",
    "user {email} requested {url} and got {n}",
]

ips = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
numbers = st.integers(0, 10**12).map(str)
uuids = st.uuids().map(str)
timestamps = st.datetimes().map(lambda d: d.isoformat(timespec="seconds") + "Z")
paths = st.lists(st.text(string.ascii_lowercase + "_", min_size=1, max_size=8), min_size=2, max_size=5).map(
    lambda parts: "/" + "/".join(parts) + ".py"
)
quoted = st.text(string.ascii_letters + string.digits + "_-", min_size=1, max_size=20).map(lambda s: f"'{s}'")
hexes = st.integers(16**7, 16**12).map(lambda n: f"0x{n:x}")
emails = st.from_regex(r"[a-z]{1,8}@[a-z]{1,8}\.(com|org|io)", fullmatch=True)
urls = st.from_regex(r"https://[a-z]{1,10}\.example\.com/[a-z0-9/]{0,20}", fullmatch=True)


def variables():
    return st.fixed_dictionaries(
        {
            "ip": ips,
            "n": numbers,
            "uuid": uuids,
            "ts": timestamps,
            "path": paths,
            "quoted": quoted,
            "hex": hexes,
            "email": emails,
            "url": urls,
        }
    )


@settings(max_examples=300, deadline=None)
@given(template=st.sampled_from(TEMPLATES), a=variables(), b=variables())
def test_variable_parts_do_not_change_the_fingerprint(template, a, b):
    fa = fingerprint(code="X.Y", error_type="E", message=template.format(**a))
    fb = fingerprint(code="X.Y", error_type="E", message=template.format(**b))
    assert fa == fb, (normalize_message(template.format(**a)), normalize_message(template.format(**b)))


@settings(max_examples=200, deadline=None)
@given(a=variables())
def test_distinct_errors_do_not_collide(a):
    prints = {fingerprint(code="X.Y", error_type="E", message=t.format(**a)) for t in TEMPLATES}
    assert len(prints) == len(TEMPLATES)
    # code and type are part of the identity
    base = TEMPLATES[0].format(**a)
    assert fingerprint(code="X.Y", message=base) != fingerprint(code="X.Z", message=base)
    assert fingerprint(code="X.Y", error_type="A", message=base) != fingerprint(
        code="X.Y", error_type="B", message=base
    )


@settings(max_examples=200, deadline=None)
@given(words=st.lists(st.text(string.ascii_lowercase, min_size=3, max_size=10), min_size=1, max_size=8, unique=True))
def test_different_words_give_different_fingerprints(words):
    prints = {fingerprint(code="X.Y", message=f"failed to {w} the thing") for w in words}
    assert len(prints) == len(words)


def test_format_carries_the_algorithm_version():
    value = fingerprint(code="X.Y", message="m")
    assert value.startswith(f"fp{FINGERPRINT_VERSION}:") and len(value) == len("fp1:") + 32


def test_stable_across_processes():
    code = (
        "from ipai_ops.fingerprint import fingerprint; "
        "print(fingerprint(code='A.B', error_type='T', message='id 42 at /srv/x/y.py'))"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": str(seed), "PATH": "/usr/bin"},
        ).stdout
        for seed in (1, 2, 3)
    }
    assert len(outs) == 1


def test_frames_ignore_line_numbers_and_library_frames():
    tb_v1 = (
        "Traceback (most recent call last):\n"
        '  File "/usr/lib/python3/site-packages/requests/api.py", line 59, in request\n'
        '  File "/srv/app/addons/ipai_pulser_connector/models/worker.py", line 120, in _run_attempt\n'
        '  File "/srv/app/addons/ipai_pulser_connector/handlers/health.py", line 33, in run\n'
        "ValueError: boom\n"
    )
    tb_v2 = tb_v1.replace("line 120", "line 131").replace("line 33", "line 40").replace("/srv/app", "/opt/other")
    f1 = frames_from_stacktrace(tb_v1, in_app=("addons/",))
    f2 = frames_from_stacktrace(tb_v2, in_app=("addons/",))
    assert f1 == f2 == ["ipai_pulser_connector/handlers/health:run", "ipai_pulser_connector/models/worker:_run_attempt"]
    assert fingerprint(code="X.Y", message="boom", frames=f1) != fingerprint(code="X.Y", message="boom")


def test_normalisation_examples():
    msg = f"intent {uuid.uuid4()} failed at 2026-11-21T10:00:00Z after 3 attempts reading '/etc/x.conf'"
    assert normalize_message(msg) == "intent <uuid> failed at <ts> after <n> attempts reading '<str>'"


# ---------------------------------------------------------------- necessary conditions change nothing


def _normalize_every_rule(message: str) -> str:
    """The reference: every rule, with no necessary-condition gate."""
    from ipai_ops.fingerprint import _MAX_MESSAGE, _RULES, _SPACE_RE

    text = message[:_MAX_MESSAGE]
    for pattern, placeholder in _RULES:
        text = pattern.sub(placeholder, text)
    return _SPACE_RE.sub(" ", text).strip()


_PIECES = st.sampled_from(
    ["-", ":", ".", "/", "\\", "'", '"', "@", "://", "0x", "-----BEGIN ", "-----END ", "T", "Z", "+", "e", "a"]
)
_RUNS = st.text(alphabet="0123456789abcdefABCDEF-:. /'\"@xTZe+", max_size=24)


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.one_of(_PIECES, _RUNS, st.text(max_size=8)), max_size=14).map("".join))
def test_normalize_message_conditions_change_nothing(message):
    assert normalize_message(message) == _normalize_every_rule(message)


def test_normalize_message_conditions_change_nothing_on_real_text():
    import json
    from pathlib import Path

    corpus = Path(__file__).parents[1] / "classify" / "corpus"
    logs = sorted(p for p in (corpus / "logs").rglob("*") if p.is_file())
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in logs]
    for jsonl in sorted(corpus.glob("*.jsonl")):
        for line in jsonl.read_text(encoding="utf-8").splitlines():
            case = json.loads(line)
            texts += [case[key] for key in ("text", "message") if isinstance(case.get(key), str)]
    lines = [line for text in texts for line in text.splitlines()[:400]]
    assert len(lines) > 5000
    for line in lines:
        assert normalize_message(line) == _normalize_every_rule(line)
