"""Running one command with both output streams captured, bounded, redacted and teed.

What lands on disk, the size cap and the redaction order: docs/agent_runs.md, "Output
capture". POSIX only: the command gets its own session (a timeout kills all it started),
and one ``selectors`` loop reads both pipes and keeps the clock (the pipe deadlock of the
``subprocess`` docs, no reader thread outliving the run). Raw text is kept only as a
bounded in-memory tail, for classification: a signature may quote what redaction rewrites.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO

from ipai_ops.runs.secrets import SecretValues
from ipai_ops.text import redact

#: Default per-stream cap on disk (10 MiB).
DEFAULT_MAX_OUTPUT_BYTES = 10 * 1024 * 1024
#: The in-memory tail kept past the cap is at most this big (and at most half the cap).
MAX_TAIL_BYTES = 1024 * 1024
#: Raw and redacted tails kept in memory for classification and the envelope.
KEEP_TAIL_BYTES = 64 * 1024
#: A line longer than this is redacted and written without waiting for its newline.
MAX_PENDING_LINE = 64 * 1024
_READ_CHUNK = 64 * 1024
#: How long pipes are still read after the command exited (a background child of the
#: command may hold them open forever).
DRAIN_GRACE_SECONDS = 2.0

_PEM_BEGIN = re.compile(r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----")
_PEM_END = re.compile(r"-----END (?:[A-Z]+ )*PRIVATE KEY-----")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")


def strip_ansi(text: str) -> str:
    """Text without terminal colour and cursor sequences (tools that force colour)."""
    return _ANSI.sub("", text) if "\x1b" in text else text


class LineRedactor:
    """Redacts a byte stream a block of complete lines at a time.

    A partial line is held back until its newline arrives (or it grows past
    :data:`MAX_PENDING_LINE`), so a secret split across two reads is still seen whole.
    A private key spans lines: from its BEGIN line to its END line nothing is emitted
    but one ``[REDACTED:private_key]`` marker, however many reads it takes.
    """

    def __init__(self, secrets: SecretValues | None = None) -> None:
        self._pending = bytearray()
        self._in_key = False
        self._secrets = secrets or SecretValues()

    def feed(self, data: bytes) -> bytes:
        self._pending += data
        cut = self._pending.rfind(b"\n")
        if cut < 0:
            if len(self._pending) < MAX_PENDING_LINE:
                return b""
            cut = len(self._pending) - 1
        block = bytes(self._pending[: cut + 1])
        del self._pending[: cut + 1]
        return self._block(block)

    def flush(self) -> bytes:
        block = bytes(self._pending)
        self._pending.clear()
        return self._block(block) if block else b""

    def _block(self, block: bytes) -> bytes:
        # Known secret values first (whatever surrounds them), then the pattern rules.
        text = self._secrets.mask(block.decode("utf-8", "surrogateescape"))
        if self._in_key:
            end = _PEM_END.search(text)
            if end is None:
                return b""
            self._in_key = False
            text = text[end.end() :]
            # The END line itself goes with the key (the marker already ended in a newline).
            text = text[2:] if text.startswith("\r\n") else text[1:] if text.startswith("\n") else text
        begins = list(_PEM_BEGIN.finditer(text))
        if begins and _PEM_END.search(text, begins[-1].end()) is None:
            # redact() replaces BEGIN-to-end-of-text; the key's remaining lines follow.
            self._in_key = True
        out = redact(text) or ""
        if self._in_key and not out.endswith("\n"):
            out += "\n"
        return out.encode("utf-8", "surrogateescape")


def _keep_tail(buffer: bytearray, data: bytes, limit: int) -> None:
    buffer += data
    if len(buffer) > limit:
        del buffer[: len(buffer) - limit]


def decode_tail(data: bytes, *, cut_partial_line: bool) -> str:
    """Tail bytes as text: a leading partial line (cut mid-way) is dropped when asked."""
    text = data.decode("utf-8", "replace")
    if cut_partial_line:
        newline = text.find("\n")
        if 0 <= newline < len(text) - 1:
            text = text[newline + 1 :]
    return text


class CappedLog:
    """One captured stream: the redacted, size-capped file, and the in-memory tails."""

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
        tee: BinaryIO | None = None,
        secrets: SecretValues | None = None,
    ):
        if max_bytes < 2:
            raise ValueError("max_bytes must be >= 2")
        self.path = path
        self.max_bytes = max_bytes
        self.tail_limit = min(max_bytes // 2, MAX_TAIL_BYTES)
        self.head_limit = max_bytes - self.tail_limit
        self._file = open(path, "wb", buffering=0)  # noqa: SIM115 -- closed in close(); unbuffered: a killed recorder loses nothing
        self._tee = tee
        self._redactor = LineRedactor(secrets)
        self._head_written = 0
        self._tail = bytearray()
        self.omitted_bytes = 0
        #: Bytes the command wrote (raw) and bytes after redaction.
        self.raw_bytes = 0
        self.redacted_bytes = 0
        self._raw_tail = bytearray()
        self._redacted_tail = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.raw_bytes += len(data)
        _keep_tail(self._raw_tail, data, KEEP_TAIL_BYTES)
        if self._tee is not None:
            try:
                self._tee.write(data)
                self._tee.flush()
            except (OSError, ValueError):
                self._tee = None  # the terminal went away; keep recording
        self._emit(self._redactor.feed(data))

    def _emit(self, out: bytes) -> None:
        if not out:
            return
        self.redacted_bytes += len(out)
        _keep_tail(self._redacted_tail, out, KEEP_TAIL_BYTES)
        room = self.head_limit - self._head_written
        if room > 0:
            part = out[:room]
            self._file.write(part)
            self._head_written += len(part)
            out = out[room:]
        if out:
            self._tail += out
            excess = len(self._tail) - self.tail_limit
            if excess > 0:
                del self._tail[:excess]
                self.omitted_bytes += excess

    def close(self) -> None:
        if self.closed:
            return
        self._emit(self._redactor.flush())
        tail = bytes(self._tail)
        if self.omitted_bytes:
            # Start the kept tail at a line boundary: the cut-off line is omitted too.
            newline = tail.find(b"\n", 0, 4096)
            if 0 <= newline < len(tail) - 1:
                self.omitted_bytes += newline + 1
                tail = tail[newline + 1 :]
            lead = b"" if self._head_written == 0 else b"\n"
            self._file.write(lead + f"[... {self.omitted_bytes} bytes omitted ...]\n".encode())
        self._file.write(tail)
        self._file.close()
        self.closed = True

    @property
    def truncated(self) -> bool:
        return self.omitted_bytes > 0

    def raw_tail(self) -> str:
        """Unredacted tail, for classification only: never store or print it."""
        return strip_ansi(decode_tail(bytes(self._raw_tail), cut_partial_line=self.raw_bytes > KEEP_TAIL_BYTES))

    def redacted_tail(self) -> str:
        return strip_ansi(
            decode_tail(bytes(self._redacted_tail), cut_partial_line=self.redacted_bytes > KEEP_TAIL_BYTES)
        )

    def stats(self) -> dict[str, int | bool]:
        return {
            "bytes": self.raw_bytes,
            "bytes_written": self.redacted_bytes - self.omitted_bytes,
            "omitted_bytes": self.omitted_bytes,
            "truncated": self.truncated,
        }


# --------------------------------------------------------------------------- process


@dataclass
class ProcessResult:
    """What happened to one execution of the command."""

    returncode: int | None
    started_monotonic: float
    duration_ms: int
    pid: int | None = None
    timed_out: bool = False
    #: The signal the recorder forwarded from outside (Ctrl-C, SIGTERM): a cancellation.
    cancelled_by: int | None = None
    #: The OSError that prevented the command from starting at all.
    spawn_error: OSError | None = None
    warnings: list[str] = field(default_factory=list)


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` is still running (zombies do not count)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) >= 3 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            return True
    return False


def run_process(
    argv: Sequence[str],
    *,
    stdout: CappedLog,
    stderr: CappedLog,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
    kill_grace: float = 5.0,
    drain_grace: float = DRAIN_GRACE_SECONDS,
    forward_signals: bool = True,
    poll_interval: float = 0.1,
) -> ProcessResult:
    """Run ``argv`` to completion (or timeout), pumping both pipes into the logs.

    On timeout the whole process group gets SIGTERM, then SIGKILL after ``kill_grace``
    seconds (or as soon as the command itself is gone: what it left behind has no one
    to report to). SIGINT/SIGTERM/SIGHUP received meanwhile are forwarded to the group,
    when called from the main thread, and the result says it was cancelled.
    """
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    except OSError as exc:
        return ProcessResult(None, started, int((time.monotonic() - started) * 1000), spawn_error=exc)

    result = ProcessResult(None, started, 0, pid=proc.pid)
    pgid = proc.pid  # start_new_session: the child leads its own group
    previous: dict[int, object] = {}

    def forward(signum, _frame):
        if result.cancelled_by is None:
            result.cancelled_by = signum
        _killpg(pgid, signum)

    if forward_signals and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            with contextlib.suppress(ValueError, OSError):
                previous[sig] = signal.signal(sig, forward)

    selector = selectors.DefaultSelector()
    assert proc.stdout is not None and proc.stderr is not None
    selector.register(proc.stdout, selectors.EVENT_READ, stdout)
    selector.register(proc.stderr, selectors.EVENT_READ, stderr)
    deadline = started + timeout if timeout else None
    kill_at: float | None = None
    exited_at: float | None = None
    try:
        while selector.get_map():
            now = time.monotonic()
            if deadline is not None and now >= deadline and not result.timed_out:
                result.timed_out = True
                _killpg(pgid, signal.SIGTERM)
                kill_at = now + kill_grace
            if proc.poll() is not None and exited_at is None:
                exited_at = now
                if result.timed_out:
                    _killpg(pgid, signal.SIGKILL)
            if kill_at is not None and now >= kill_at:
                _killpg(pgid, signal.SIGKILL)
                kill_at = None
            if exited_at is not None and now - exited_at > drain_grace:
                result.warnings.append(
                    f"stopped reading output {drain_grace:g}s after the command exited: "
                    "a background process it started still holds its stdout/stderr open"
                )
                break
            for key, _ in selector.select(timeout=poll_interval):
                try:
                    data = os.read(key.fd, _READ_CHUNK)
                except OSError as exc:
                    if exc.errno in (errno.EAGAIN, errno.EINTR):
                        continue
                    data = b""
                if data:
                    key.data.write(data)
                else:
                    selector.unregister(key.fileobj)
        while True:
            try:
                proc.wait(timeout=poll_interval)
                break
            except subprocess.TimeoutExpired:
                now = time.monotonic()
                if deadline is not None and now >= deadline and not result.timed_out:
                    result.timed_out = True
                    _killpg(pgid, signal.SIGTERM)
                    kill_at = now + kill_grace
                if kill_at is not None and now >= kill_at:
                    _killpg(pgid, signal.SIGKILL)
                    kill_at = None
        if result.timed_out:
            _killpg(pgid, signal.SIGKILL)
    finally:
        selector.close()
        for stream in (proc.stdout, proc.stderr):
            with contextlib.suppress(OSError):
                stream.close()
        for sig, handler in previous.items():
            with contextlib.suppress(ValueError, OSError, TypeError):
                signal.signal(sig, handler)
        if proc.returncode is None:  # an exception escaped the loop: leave nothing running
            _killpg(pgid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                proc.wait(timeout=5)
    result.returncode = proc.returncode
    result.duration_ms = int((time.monotonic() - started) * 1000)
    return result


class _TextTee:
    """A binary sink over a text stream (pytest's capture, a StringIO)."""

    def __init__(self, stream: IO[str]):
        self._stream = stream

    def write(self, data: bytes) -> None:
        self._stream.write(data.decode("utf-8", "replace"))

    def flush(self) -> None:
        self._stream.flush()


def binary_sink(stream: IO[Any] | None) -> BinaryIO | None:
    """Where to tee raw bytes for ``stream``: itself, its ``buffer``, or a decoding wrapper."""
    if stream is None:
        return None
    if isinstance(stream, (io.RawIOBase, io.BufferedIOBase)):
        return stream  # type: ignore[return-value]
    buffer = getattr(stream, "buffer", None)
    if buffer is not None:
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
        return buffer
    return _TextTee(stream)  # type: ignore[return-value]
