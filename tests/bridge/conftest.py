"""Bridge fixtures: a real ``ipai-ops bridge serve`` subprocess, a TCP proxy to fake outages."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import string
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import query_rows

REPO = Path(__file__).resolve().parents[2]
#: ``ipai-ops`` in this interpreter. Not ``-m ipai_ops.cli``: that runs cli.py as
#: ``__main__``, whose CliError is another class than the one command modules raise.
IPAI_OPS = [sys.executable, "-c", "import sys; from ipai_ops.cli import main; sys.exit(main())"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class BridgeProcess:
    """``python -m ipai_ops.cli bridge serve`` on free ports, stopped with SIGTERM."""

    def __init__(self, dsn: str, *, workers: int = 1, env: dict[str, str] | None = None, **flags: object):
        self.dsn = dsn
        self.http_port = free_port()
        self.grpc_port = int(flags.pop("grpc_port")) if "grpc_port" in flags else free_port()
        self.workers = workers
        self.flags = flags
        self.env = {**os.environ, "IPAI_BRIDGE_RETRY_AFTER_SECONDS": "1", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = REPO / ".pytest_cache" / f"bridge-{self.http_port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def command(self) -> list[str]:
        cmd = [
            *IPAI_OPS,
            "bridge",
            "serve",
            "--host",
            "127.0.0.1",
            "--http-port",
            str(self.http_port),
            "--grpc-port",
            str(self.grpc_port),
            "--workers",
            str(self.workers),
            "--dsn",
            self.dsn,
            "--log-level",
            "WARNING",
        ]
        for key, value in self.flags.items():
            cmd += [f"--{key.replace('_', '-')}", str(value)]
        return cmd

    def start(self, *, timeout: float = 30) -> BridgeProcess:
        self.log.parent.mkdir(exist_ok=True)
        out = self.log.open("wb")
        self.proc = subprocess.Popen(self.command(), env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bridge exited with {self.proc.returncode}: {self.log.read_text()}")
            if self._healthy():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"bridge did not become healthy: {self.log.read_text()}")

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=1) as resp:
                if resp.status != 200:
                    return False
        except OSError:
            return False
        if self.grpc_port:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.grpc_port), 1):
                return True
            return False
        return True

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)


class TcpProxy:
    """A local TCP relay to PostgreSQL; ``down()`` is a real outage from the bridge's side."""

    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)


def proxied_dsn(dsn: str, port: int) -> str:
    return dsn.replace(":5432/", f":{port}/")


def _select(dsn: str, sql: str, where: dict[str, str], *, alias: str = "") -> list[dict]:
    """Rows of ``sql`` (which ends in ``WHERE {where}``), filtered on equal columns."""
    clauses = " AND ".join(f"{alias}{key} = %({key})s" for key in where) or "true"
    return query_rows(dsn, sql.format(where=clauses), where)


def error_rows(dsn: str, **where: str) -> list[dict]:
    return _select(
        dsn,
        "SELECT code, count, source, service, message, error_type, last_trace_id, last_span_id,"
        " fingerprint, last_service_version, sample, severity"
        " FROM ops.agent_errors WHERE {where} ORDER BY code, message",
        where,
    )


def occurrence_ids(dsn: str, **where: str) -> list[tuple[str, str]]:
    rows = _select(
        dsn,
        "SELECT o.source, o.occurrence_id FROM ops.agent_error_occurrences o"
        " JOIN ops.agent_errors e ON e.id = o.error_id WHERE {where} ORDER BY 1, 2",
        where,
        alias="e.",
    )
    return [(row["source"], row["occurrence_id"]) for row in rows]


def unique_letters() -> str:
    """Letters only: fingerprints normalise digits and hex away, a letter token keeps rows apart."""
    return "".join(random.choices(string.ascii_lowercase, k=12))


def post(url: str, body: bytes, *, content_type: str = "application/x-protobuf", headers=None):
    """POST ``body``; (status, headers, answer) whatever the status."""
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": content_type, **(headers or {})}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@pytest.fixture(scope="module")
def bridge(module_ops_dsn: str) -> Iterator[BridgeProcess]:
    proc = BridgeProcess(module_ops_dsn, workers=2).start()
    try:
        yield proc
    finally:
        proc.stop()


# pytest-odoo (installed for the Odoo addons' tests) autouses fixtures that need an Odoo
# database. The bridge tests have none: these no-ops shadow them for tests/bridge only.
@pytest.fixture(scope="session", autouse=True)
def load_registry() -> None:
    return None


@pytest.fixture(scope="session", autouse=True)
def load_http() -> None:
    return None
