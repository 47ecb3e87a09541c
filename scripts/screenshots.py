#!/usr/bin/env python3
"""The README's screenshots, from the real flows in a real browser.

    python scripts/screenshots.py [--out docs/img] [--chromium /usr/bin/chromium] [--keep-db]

What ``scripts/run.sh`` does, on a throwaway database and free ports:

1. both addons installed with demo data (``scripts/odoo_layer.py``'s install; the addon's
   install hook applies the ops schema);
2. the OTLP bridge (``ipai-ops bridge serve``) and Odoo started on that database;
3. ``ipai-ops demo`` run against them: the sample agent's errors through the bridge, the
   recorded runs and benchmarks, signed intents through the Pulser API and the worker, and
   the sample resolution through Odoo's RPC API. It must succeed;
4. Odoo stopped and run again with ``--test-tags ipai_readme_screenshots``: the opt-in
   ``HttpCase`` in ``addons/ipai_reliability/tests/test_readme_screenshots.py`` opens each
   page of :data:`PAGES` in Odoo's own test browser (headless Chromium), waits until the page
   shows what the README says it shows, and captures it;
5. the new images replace those in ``--out`` only when every page was captured; everything
   is stopped and the database dropped, also on errors and Ctrl-C.

Needs Odoo 19 (``ODOO_SRC``, ``import odoo`` or ``/opt/odoo``) with its pinned Python
requirements (``requirements/odoo19.txt``: ``websocket-client``, which Odoo's test browser
drives Chromium with) and Chromium (``/usr/bin/chromium``: ``apt-get install -y chromium``,
listed in ``requirements/odoo19-apt.txt``). Without one of them it stops at once with one
line saying which (exit 3).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import quote

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

import odoo_layer  # noqa: E402

#: Every image the README shows, with what it must show; the HttpCase writes one per entry.
PAGES = {
    "agent_errors_console.png": "the Agent Errors console: today's open errors, the most frequent first",
    "agent_error_failure_panel.png": "an error's form: the failure panel (stack trace, deciding lines) and its runbook",
    "runbook.png": "a failure mode's runbook, rendered, the business-users block first",
    "failure_modes_kanban.png": "the failure modes synced from the registry",
    "resolution_form.png": "the demo's resolution record, linked to its error, in review",
}
TEST_TAG = "ipai_readme_screenshots"
OUT_DIR_ENV = "IPAI_README_SCREENSHOTS_DIR"  # read by the HttpCase
EXIT_FAILED, EXIT_UNAVAILABLE = 1, 3


class ScreenshotError(Exception):
    """A step failed; the message says which and where its log is."""


def log(msg: str) -> None:
    print(f"screenshots: {msg}", flush=True)


def check_prerequisites(chromium: str) -> Path:
    """Odoo's source dir; raises :class:`ScreenshotError` naming what is missing."""
    path = Path(chromium)
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise ScreenshotError(f"Chromium not found at {chromium}: apt-get install -y chromium (or --chromium PATH)")
    version = subprocess.run([str(path), "--version"], capture_output=True, text=True, check=False, timeout=60)
    if version.returncode != 0:
        raise ScreenshotError(f"{chromium} --version failed: {(version.stderr or version.stdout).strip()[:300]}")
    odoo_src = odoo_layer.locate_odoo()
    if odoo_src is None:
        raise ScreenshotError("Odoo 19 not found (ODOO_SRC, import odoo, /opt/odoo): see README.md, 'Odoo 19'")
    if importlib.util.find_spec("websocket") is None:
        raise ScreenshotError(
            "websocket-client is missing (Odoo's test browser needs it): pip install -r requirements/odoo19.txt"
        )
    log(f"{version.stdout.strip()}, Odoo at {odoo_src}")
    return odoo_src


def dsn(db: str) -> str:
    opts = odoo_layer._db_options()
    auth = quote(opts["db_user"]) + (":" + quote(opts["db_password"]) if opts["db_password"] else "")
    return f"postgresql://{auth}@{opts['db_host']}:{opts['db_port']}/{db}"


def wait_http(url: str, proc: subprocess.Popen, name: str, logfile: Path, timeout: float = 120.0) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ScreenshotError(f"{name} exited with {proc.returncode} (see {logfile})")
        try:
            if requests.get(url, timeout=2).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise ScreenshotError(f"{name} did not answer {url} within {timeout:.0f} s (see {logfile})")


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run_demo(db: str, *, bridge_url: str, odoo_url: str, work: Path, env: dict[str, str]) -> None:
    demo_log = work / "demo.log"
    cmd = [sys.executable, "-m", "ipai_ops", "demo", "--otlp-endpoint", bridge_url, "--odoo-url", odoo_url]
    cmd += ["--odoo-db", db, "--dsn", dsn(db)]
    log("ipai-ops demo " + " ".join(cmd[4:]))
    with demo_log.open("wb") as out:
        done = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, check=False, timeout=900)
    if done.returncode != 0:
        raise ScreenshotError(f"ipai-ops demo exited with {done.returncode}:\n{tail(demo_log)}")
    log(f"demo done ({demo_log})")


def take(
    odoo_src: Path, config: Path, db: str, *, staging: Path, chromium: str, work: Path, env: dict[str, str]
) -> None:
    """Odoo's test runner on the demo database: the opt-in HttpCase writes PAGES into staging."""
    test_log = work / "odoo-screenshots.log"
    cmd = odoo_layer.odoo_bin(
        odoo_src, config, "-d", db, "--db-filter", f"^{db}$", "--test-tags", TEST_TAG,
        "--stop-after-init", "--max-cron-threads", "0", "--screenshots", str(work / "failed"), "--log-level", "info",
    )  # fmt: skip
    log(f"Odoo's test browser: --test-tags {TEST_TAG} ({test_log})")
    with test_log.open("wb") as out:
        done = subprocess.run(
            cmd,
            env={**env, OUT_DIR_ENV: str(staging), "ODOO_BROWSER_BIN": chromium},
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
            timeout=1800,
        )
    missing = [name for name in PAGES if not (staging / name).is_file()]
    if done.returncode != 0 or missing:
        problems = [line for line in tail(test_log, 400).splitlines() if " ERROR " in line or "FAIL" in line]
        raise ScreenshotError(
            f"the screenshot run exited with {done.returncode}; not captured: {', '.join(missing) or 'none'}"
            f" (log {test_log}, failure screenshots under {work / 'failed'})\n" + "\n".join(problems[-20:])
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "img"), help="folder of the images (docs/img)")
    parser.add_argument("--chromium", default=os.environ.get("ODOO_BROWSER_BIN") or "/usr/bin/chromium")
    parser.add_argument("--keep-db", action="store_true", help="keep the database and the work folder")
    args = parser.parse_args(argv)
    try:
        odoo_src = check_prerequisites(args.chromium)
    except ScreenshotError as exc:
        print(f"screenshots: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    out = Path(args.out)
    work = Path(tempfile.mkdtemp(prefix="ipai_shots_"))
    db = f"ipai_shots_{uuid.uuid4().hex[:8]}"
    odoo_port, http_port, grpc_port = (odoo_layer._free_port() for _ in range(3))
    config = odoo_layer.write_config(odoo_src, work / "odoo.conf", data_dir=work / "data", http_port=odoo_port)
    env = {
        **os.environ,
        "IPAI_OPS_DSN": dsn(db),
        # the demo's recorded runs keep their folders here, not in the user's state dir
        "IPAI_OPS_RUN_ARTIFACTS": str(work / "runs"),
    }
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    bridge = server = None
    ok = False
    try:
        odoo_layer.install(odoo_src, config, db, demo=True)
        bridge_log = work / "bridge.log"
        bridge = subprocess.Popen(
            [sys.executable, "-m", "ipai_ops", "bridge", "serve", "--host", "127.0.0.1",
             "--http-port", str(http_port), "--grpc-port", str(grpc_port)],
            env={**env, "IPAI_BRIDGE_TOKEN_SOURCES": "*,odoo"},  # as run.sh: loopback, no token
            stdout=bridge_log.open("wb"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        bridge_url = f"http://127.0.0.1:{http_port}"
        wait_http(f"{bridge_url}/healthz", bridge, "the bridge", bridge_log)
        odoo_log = work / "odoo.log"
        server = subprocess.Popen(
            odoo_layer.odoo_bin(odoo_src, config, "-d", db, "--db-filter", f"^{db}$", "--max-cron-threads", "0"),
            env=env, stdout=odoo_log.open("wb"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        odoo_url = f"http://127.0.0.1:{odoo_port}"
        wait_http(f"{odoo_url}/web/login", server, "Odoo", odoo_log)
        run_demo(db, bridge_url=bridge_url, odoo_url=odoo_url, work=work, env=env)
        stop(server)
        stop(bridge)
        staging = work / "shots"
        take(odoo_src, config, db, staging=staging, chromium=args.chromium, work=work, env=env)
        out.mkdir(parents=True, exist_ok=True)
        for name, what in PAGES.items():
            shutil.move(staging / name, out / name)
            log(f"{out / name}: {what}")
        ok = True
        return 0
    except ScreenshotError as exc:
        print(f"screenshots: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except subprocess.CalledProcessError as exc:
        print(f"screenshots: {' '.join(map(str, exc.cmd[:4]))} ... exited with {exc.returncode}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("screenshots: interrupted", file=sys.stderr)
        return 130
    finally:
        stop(server)
        stop(bridge)
        if args.keep_db:
            log(f"kept database {db} and {work}")
        else:
            odoo_layer.drop_database(db)
            if ok:
                shutil.rmtree(work, ignore_errors=True)
            else:
                log(f"kept the logs in {work}")


if __name__ == "__main__":
    sys.exit(main())
