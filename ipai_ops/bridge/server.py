"""Running the bridge: one worker (event loop with both listeners) or a pre-fork supervisor.

Multi-core: ``workers`` processes each bind the HTTP and gRPC ports with SO_REUSEPORT,
so the kernel spreads connections over them; nothing is shared between workers but
the PostgreSQL database and the prometheus-client multiprocess directory. Workers
are started with the ``spawn`` method (gRPC does not survive ``fork``) and restarted
if they die; SIGTERM/SIGINT stop everything gracefully (in-flight requests finish).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ipai_ops.bridge.settings import PROMETHEUS_MULTIPROC_DIR, Settings

log = logging.getLogger(__name__)

#: Seconds in-flight requests get to finish on shutdown.
SHUTDOWN_GRACE_S = 10.0


def protobuf_backend() -> str:
    from google.protobuf.internal import api_implementation

    return api_implementation.Type()


def check_protobuf_backend(*, allow_python: bool) -> str | None:
    """A refusal message when protobuf runs on its pure-Python backend (~200x slower than upb)."""
    backend = protobuf_backend()
    if backend == "python" and not allow_python:
        return (
            "protobuf is using its pure-Python backend (about 200x slower than upb); install a "
            "protobuf wheel with the upb backend, unset PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION, or "
            "pass --allow-python-protobuf / IPAI_BRIDGE_ALLOW_PYTHON_PROTOBUF=1"
        )
    return None


def _new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


async def serve_worker(settings: Settings, *, stop: asyncio.Event, started: Callable[[], None] | None = None) -> None:
    """Serve until ``stop`` is set; then finish in-flight requests and close."""
    from aiohttp import web

    from ipai_ops.bridge.auth import Senders
    from ipai_ops.bridge.grpc_server import build_server
    from ipai_ops.bridge.http_server import CONNECTIONS, build_app
    from ipai_ops.bridge.pipeline import Pipeline
    from ipai_ops.bridge.quota import PostgresLedger, Quota
    from ipai_ops.bridge.writer import Writer
    from ipai_ops.registry import default_registry

    writer = Writer(settings.dsn, pool_size=settings.db_pool)
    # One budget for every worker and replica: counted in PostgreSQL, spent in slices.
    quota = Quota(settings.quota_per_minute, settings.quota_per_hour, ledger=PostgresLedger(settings.dsn))
    pipeline = Pipeline(
        registry=default_registry(),
        writer=writer,
        max_inflight=settings.max_inflight,
        default_source=settings.default_source,
        sample_refresh_seconds=settings.sample_refresh_seconds,
        body_budget=settings.max_inflight * settings.max_body_bytes,
        max_records=settings.max_records,
        max_decompressed_bytes=settings.max_decompressed_bytes,
        max_json_bytes=settings.max_json_bytes,
        cpu_seconds=settings.cpu_seconds,
        senders=Senders.from_settings(settings),
        quota=quota,
    )
    app = build_app(pipeline, settings)
    runner = web.AppRunner(
        app,
        auto_decompress=False,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=SHUTDOWN_GRACE_S,
        # Also the deadline for a request head: aiohttp starts this timer when a connection
        # opens and closes the connection if no complete head has arrived when it fires.
        keepalive_timeout=settings.idle_timeout_seconds,
        # After an early answer (413) the rest of a body is read and dropped for at most
        # this long, so the sender sees the answer rather than a reset.
        lingering_time=2.0,
    )
    await runner.setup()
    assert runner.server is not None
    app[CONNECTIONS].attach(runner.server)
    grpc_server = None
    try:
        site = web.TCPSite(runner, settings.host, settings.http_port, reuse_port=True, backlog=1024)
        await site.start()
        if settings.grpc_port:
            grpc_server = build_server(pipeline, settings)
            await grpc_server.start()
        log.info(
            "ipai bridge worker %s serving OTLP/HTTP on %s:%s and OTLP/gRPC on %s",
            os.getpid(),
            settings.host,
            settings.http_port,
            f"{settings.host}:{settings.grpc_port}" if settings.grpc_port else "(disabled)",
        )
        if started is not None:
            started()
        await stop.wait()
    finally:
        if grpc_server is not None:
            await grpc_server.stop(SHUTDOWN_GRACE_S)
        await runner.cleanup()
        pipeline.close()
        quota.close()
        writer.close()


def limit_malloc_arenas(arenas: int = 2) -> None:
    """``MALLOC_ARENA_MAX`` for a process started without it (glibc's ``mallopt``; elsewhere nothing).

    Requests are decoded in one thread per slot; with a malloc arena per thread each
    decode lands in memory the others left cold (about 90 us more per request measured).
    """
    if os.environ.get("MALLOC_ARENA_MAX"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(-8, arenas)  # M_ARENA_MAX


def run_worker(settings: Settings, *, install_signals: bool = True) -> None:
    """One worker process (or the whole bridge when workers == 1)."""
    limit_malloc_arenas()
    loop = _new_loop(settings.event_loop)
    asyncio.set_event_loop(loop)
    stop = asyncio.Event()
    if install_signals and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    try:
        loop.run_until_complete(serve_worker(settings, stop=stop))
    finally:
        loop.close()


def _worker_entry(settings: Settings) -> None:
    configure_logging(settings.log_level)
    # The supervisor handles Ctrl-C for the group; a worker stops on SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    run_worker(settings)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
    )


def ports_in_use(settings: Settings) -> list[str]:
    """Why the configured ports cannot be listened on, one line each (empty: they can).

    Workers bind with SO_REUSEPORT, which would let a second bridge (same user) join the
    first one's ports silently and split its traffic. A probe bind without
    SO_REUSEPORT fails on a port someone listens on, so the conflict is caught up front
    (and so are an unresolvable host and a privileged port).
    """
    busy = []
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    for label, port in (("OTLP/HTTP", settings.http_port), ("OTLP/gRPC", settings.grpc_port)):
        if not port:
            continue
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((settings.host, port))
            except OSError as exc:
                hint = " (another bridge running? choose other ports with --http-port/--grpc-port)"
                busy.append(
                    f"{label} port {port} on {settings.host}: {exc.strerror}"
                    + (hint if exc.errno == errno.EADDRINUSE else "")
                )
    return busy


def run(settings: Settings) -> int:
    """Serve with ``settings.effective_workers`` processes; return the exit code."""
    workers = settings.effective_workers
    if workers == 1:
        run_worker(settings)
        return 0
    return _supervise(settings, workers)


def _supervise(settings: Settings, workers: int) -> int:
    own_dir = None
    metrics_dir = os.environ.get(PROMETHEUS_MULTIPROC_DIR)
    if not metrics_dir:
        own_dir = metrics_dir = tempfile.mkdtemp(prefix="ipai-bridge-metrics-")
        os.environ[PROMETHEUS_MULTIPROC_DIR] = metrics_dir
    else:
        # Stale files from an earlier run would be summed into the new one.
        for stale in Path(metrics_dir).glob("*.db"):
            stale.unlink()
    # glibc gives every writer thread its own malloc arena; two arenas keep RSS flat
    # under load at no measurable cost (read by the workers' C runtime at start).
    os.environ.setdefault("MALLOC_ARENA_MAX", "2")
    ctx = multiprocessing.get_context("spawn")
    procs: list[multiprocessing.process.BaseProcess] = []
    stopping = threading.Event()

    def _stop(signum: int, frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)

    def start() -> multiprocessing.process.BaseProcess:
        proc = ctx.Process(target=_worker_entry, args=(settings,), name="ipai-bridge-worker", daemon=False)
        proc.start()
        return proc

    try:
        procs = [start() for _ in range(workers)]
        log.info("ipai bridge supervisor %s started %s workers", os.getpid(), workers)
        while not stopping.wait(0.5):
            for index, proc in enumerate(procs):
                if not proc.is_alive() and not stopping.is_set():
                    log.error("worker %s exited with %s; restarting it", proc.pid, proc.exitcode)
                    _mark_dead(proc.pid)
                    time.sleep(0.5)  # a worker that dies at start must not spin the CPU
                    procs[index] = start()
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        deadline = time.monotonic() + SHUTDOWN_GRACE_S + 5
        for proc in procs:
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()
            _mark_dead(proc.pid)
        if own_dir:
            shutil.rmtree(own_dir, ignore_errors=True)
    return 0


def _mark_dead(pid: int | None) -> None:
    if pid is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)
