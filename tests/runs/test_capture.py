"""Output capture: bounded head + tail on disk, redaction across reads, no pipe deadlock, group kill."""

from __future__ import annotations

import io
import signal
import time
from pathlib import Path

from ipai_ops.runs.capture import CappedLog, LineRedactor, group_alive, run_process

from .conftest import PY


def _feed_all(redactor: LineRedactor, chunks: list[bytes]) -> str:
    out = b"".join(redactor.feed(c) for c in chunks) + redactor.flush()
    return out.decode()


def test_a_secret_split_across_two_reads_is_still_redacted():
    text = _feed_all(LineRedactor(), [b"db password=hun", b"ter2 ok\nAuthorization: Bearer abcdefgh", b"ijklmn\n"])
    assert "hunter2" not in text and "ter2" not in text
    assert "abcdefghijklmn" not in text
    assert text.count("\n") == 2


def test_a_private_key_across_many_reads_leaves_one_marker():
    chunks = [
        b"before\n-----BEGIN PRIVATE KEY-----\n",
        b"MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n",
        b"c2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----\n",
        b"after\n",
    ]
    text = _feed_all(LineRedactor(), chunks)
    assert "MIIEvQ" not in text and "c2VjcmV0" not in text
    assert text == "before\n[REDACTED:private_key]\nafter\n"


def test_over_the_cap_the_file_keeps_head_marker_and_tail(tmp_path: Path):
    log = CappedLog(tmp_path / "out.log", max_bytes=4096)
    lines = [f"line {n:05d} {'x' * 40}\n".encode() for n in range(1000)]
    for line in lines:
        log.write(line)
    log.close()
    data = (tmp_path / "out.log").read_bytes()
    assert len(data) <= 4096 + 64
    text = data.decode()
    assert text.startswith("line 00000 ")
    assert text.endswith("line 00999 " + "x" * 40 + "\n")
    assert f"[... {log.omitted_bytes} bytes omitted ...]" in text
    # Everything is accounted for: head + tail + omitted = what the command wrote.
    body = text.replace(f"\n[... {log.omitted_bytes} bytes omitted ...]\n", "")
    assert len(body.encode()) + log.omitted_bytes == sum(map(len, lines))
    assert log.stats()["truncated"] is True


def test_under_the_cap_the_file_is_the_output(tmp_path: Path):
    tee = io.BytesIO()
    log = CappedLog(tmp_path / "out.log", max_bytes=4096, tee=tee)
    log.write(b"hello token=abc123secret\n")
    log.write(b"no newline at the end")
    log.close()
    assert (tmp_path / "out.log").read_text() == "hello token=[REDACTED:secret]\nno newline at the end"
    # The terminal gets what the command printed; the raw tail is for classification only.
    assert tee.getvalue() == b"hello token=abc123secret\nno newline at the end"
    assert "abc123secret" in log.raw_tail() and "abc123secret" not in log.redacted_tail()


def test_both_pipes_full_does_not_deadlock(tmp_path: Path):
    # 2 MiB on each stream in alternating 64 KiB blocks: a reader of one pipe at a time
    # (communicate() without threads, or read() of stdout first) would hang on a full stderr.
    code = (
        "import sys\n"
        "for i in range(32):\n"
        "    sys.stdout.write('o' * 65535 + '\\n'); sys.stdout.flush()\n"
        "    sys.stderr.write('e' * 65535 + '\\n'); sys.stderr.flush()\n"
    )
    out = CappedLog(tmp_path / "o.log", max_bytes=1 << 20)
    err = CappedLog(tmp_path / "e.log", max_bytes=1 << 20)
    result = run_process([PY, "-c", code], stdout=out, stderr=err, timeout=30)
    out.close()
    err.close()
    assert result.returncode == 0 and not result.timed_out
    assert out.raw_bytes == err.raw_bytes == 32 * 65536
    assert out.truncated and err.truncated


def test_timeout_sigterm_then_sigkill_for_a_command_that_ignores_sigterm(tmp_path: Path):
    code = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\n"
    code += "time.sleep(60)\n"
    out = CappedLog(tmp_path / "o.log", max_bytes=4096)
    err = CappedLog(tmp_path / "e.log", max_bytes=4096)
    started = time.monotonic()
    result = run_process([PY, "-c", code], stdout=out, stderr=err, timeout=0.5, kill_grace=0.5)
    out.close()
    err.close()
    assert result.timed_out
    assert result.returncode == -signal.SIGKILL
    assert time.monotonic() - started < 10
    assert not group_alive(result.pid)


def test_a_missing_program_is_a_spawn_error_not_an_exception(tmp_path: Path):
    out = CappedLog(tmp_path / "o.log", max_bytes=4096)
    err = CappedLog(tmp_path / "e.log", max_bytes=4096)
    result = run_process(["ipai-no-such-program-xyz"], stdout=out, stderr=err)
    assert isinstance(result.spawn_error, FileNotFoundError) and result.returncode is None
