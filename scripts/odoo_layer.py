#!/usr/bin/env python3
"""The Odoo layer of the test command and of the run command.

    python scripts/odoo_layer.py locate            # print the Odoo 19 source dir, exit 1 if none
    python scripts/odoo_layer.py test [pytest args] # fresh DB, install both addons, pytest-odoo, drop DB
    python scripts/odoo_layer.py test --only ipai_reliability [pytest args]
                                                    # the same with that addon alone (and its tests)
    python scripts/odoo_layer.py install --db NAME [--demo]   # create/upgrade a database with both addons
    python scripts/odoo_layer.py serve --db NAME [--port 8069] # run Odoo (foreground)

Odoo is found via ``ODOO_SRC``, else ``import odoo``, else ``/opt/odoo`` (a
source install). Database connection: ``ODOO_DB_HOST`` (127.0.0.1),
``ODOO_DB_PORT`` (5432), ``ODOO_DB_USER`` (the current OS user; Odoo refuses
``postgres``), ``ODOO_DB_PASSWORD``.
"""

from __future__ import annotations

import argparse
import getpass
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ADDONS = REPO / "addons"
OUR_ADDONS = ("ipai_reliability", "ipai_pulser_connector")


def locate_odoo() -> Path | None:
    candidates: list[Path] = []
    if os.environ.get("ODOO_SRC"):
        candidates.append(Path(os.environ["ODOO_SRC"]))
    try:
        probe = subprocess.run(
            [sys.executable, "-c", "import odoo.release, os; print(os.path.dirname(odoo.release.__file__))"],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode == 0 and probe.stdout.strip():
            candidates.append(Path(probe.stdout.strip()).parent)
    except OSError:
        pass
    candidates.append(Path("/opt/odoo"))
    for cand in candidates:
        if (cand / "odoo" / "release.py").is_file() and (cand / "odoo-bin").is_file():
            return cand.resolve()
    return None


def _db_options() -> dict[str, str]:
    return {
        "db_host": os.environ.get("ODOO_DB_HOST", "127.0.0.1"),
        "db_port": os.environ.get("ODOO_DB_PORT", "5432"),
        "db_user": os.environ.get("ODOO_DB_USER") or getpass.getuser(),
        "db_password": os.environ.get("ODOO_DB_PASSWORD", ""),
    }


def write_config(
    odoo_src: Path, path: Path, *, data_dir: Path, http_port: int = 8069, extra: dict | None = None
) -> Path:
    opts = {
        "addons_path": ",".join(str(p) for p in (ADDONS, odoo_src / "addons", odoo_src / "odoo" / "addons")),
        "data_dir": str(data_dir),
        "http_interface": "127.0.0.1",
        "http_port": str(http_port),
        "log_level": "warn",
        **{k: v for k, v in _db_options().items() if v},
        **(extra or {}),
    }
    path.write_text("[options]\n" + "".join(f"{k} = {v}\n" for k, v in opts.items()), encoding="utf-8")
    return path


def _psql(db: str, *args: str, check: bool, **run_kw) -> subprocess.CompletedProcess:
    """``psql`` on ``db`` with the connection settings of :func:`_db_options`."""
    opts = _db_options()
    env = dict(os.environ)
    if opts["db_password"]:
        env["PGPASSWORD"] = opts["db_password"]
    cmd = ["psql", "-h", opts["db_host"], "-p", opts["db_port"], "-U", opts["db_user"], "-d", db, *args]
    return subprocess.run(cmd, check=check, env=env, **run_kw)


def drop_database(db: str) -> None:
    """Drop a throwaway database. Runs in cleanup: a failure is reported, never raised, so it
    cannot hide the error that led here."""
    sql = f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'
    done = _psql("postgres", "-v", "ON_ERROR_STOP=1", "-qc", sql, check=False)
    if done.returncode:
        print(f"odoo_layer: could not drop database {db} (psql exited with {done.returncode})", file=sys.stderr)


def _addons_installed(db: str) -> bool:
    """Both addons installed in ``db`` (then -u, else -i; an empty database gets -i)."""
    probe = _psql(
        db,
        "-tAc",
        "SELECT count(*) FROM ir_module_module WHERE state = 'installed'"
        f" AND name IN ({', '.join(repr(a) for a in OUR_ADDONS)})",
        capture_output=True,
        text=True,
        check=False,
    )
    return probe.returncode == 0 and probe.stdout.strip() == str(len(OUR_ADDONS))


def odoo_bin(odoo_src: Path, config: Path, *args: str) -> list[str]:
    return [sys.executable, str(odoo_src / "odoo-bin"), "-c", str(config), *args]


def install(
    odoo_src: Path, config: Path, db: str, *, demo: bool, update: bool = False, addons: tuple[str, ...] = OUR_ADDONS
) -> None:
    modules = ",".join(addons)
    cmd = odoo_bin(odoo_src, config, "-d", db, "-u" if update else "-i", modules, "--stop-after-init")
    if demo:
        cmd.append("--with-demo")
    print(f"odoo: {'upgrading' if update else 'installing'} {modules} into {db}", flush=True)
    subprocess.run(cmd, check=True)


def split_only(args: list[str]) -> tuple[tuple[str, ...], list[str]]:
    """``--only ADDON`` (or ``--only=ADDON``, repeatable) out of the test arguments: the addons
    to install, and what goes on to pytest. Raises ``ValueError`` for an addon not ours."""
    only: list[str] = []
    rest: list[str] = []
    it = iter(args)
    for arg in it:
        if arg == "--only":
            value = next(it, None)
            if value is None:
                raise ValueError("--only needs an addon name")
        elif arg.startswith("--only="):
            value = arg.split("=", 1)[1]
        else:
            rest.append(arg)
            continue
        if value not in OUR_ADDONS:
            raise ValueError(f"--only {value}: not one of {', '.join(OUR_ADDONS)}")
        only.append(value)
    return (tuple(a for a in OUR_ADDONS if a in only) or OUR_ADDONS), rest


def cmd_test(pytest_args: list[str], odoo_src: Path) -> int:
    # The addons' tests classify by the signatures alone (a model a developer trained into
    # var/ must not change what they see); a test that needs a model hands one over.
    os.environ.setdefault("IPAI_OPS_MODEL", "off")
    try:
        addons, pytest_args = split_only(pytest_args)
    except ValueError as exc:
        print(f"odoo_layer: {exc}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="ipai_odoo_test_"))
    db = f"ipai_odoo_test_{uuid.uuid4().hex[:10]}"
    config = write_config(odoo_src, work / "odoo.conf", data_dir=work / "data", http_port=_free_port())
    # Test paths named on the command line run alone; else every installed addon's tests.
    named = [arg for arg in pytest_args if not arg.startswith("-") and Path(arg.split("::")[0]).exists()]
    tests = [] if named else [str(ADDONS / name / "tests") for name in addons if (ADDONS / name / "tests").is_dir()]
    try:
        install(odoo_src, config, db, demo=False, addons=addons)
        # Our own ini: the project's pyproject disables the pytest-odoo plugin for plain tests.
        ini = work / "pytest.ini"
        ini.write_text("[pytest]\naddopts = -ra\n", encoding="utf-8")
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-c",
            str(ini),
            "--rootdir",
            str(REPO),
            "-p",
            "no:cacheprovider",
            f"--odoo-database={db}",
            f"--odoo-config={config}",
            "--odoo-http",
            *tests,
            *pytest_args,
        ]
        print("odoo: " + " ".join(cmd[2:]), flush=True)
        return subprocess.run(cmd, check=False, cwd=REPO).returncode
    finally:
        drop_database(db)
        shutil.rmtree(work, ignore_errors=True)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Odoo layer of the test and run commands")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("locate")
    # Everything after "test" goes to pytest. Not an argparse.REMAINDER positional: that
    # refuses a first argument starting with "-" ("unrecognized arguments: -k").
    sub.add_parser("test", usage="%(prog)s [pytest args]", add_help=False)
    inst = sub.add_parser("install")
    inst.add_argument("--db", required=True)
    inst.add_argument("--demo", action="store_true")
    inst.add_argument("--data-dir", default=str(REPO / "var" / "odoo-data"))
    serve = sub.add_parser("serve")
    serve.add_argument("--db", required=True)
    serve.add_argument("--port", type=int, default=8069)
    serve.add_argument("--data-dir", default=str(REPO / "var" / "odoo-data"))
    args, extra = parser.parse_known_args(argv)
    if extra and args.cmd != "test":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")

    odoo_src = locate_odoo()
    if args.cmd == "locate":
        if odoo_src is None:
            print(
                "Odoo 19 not found (set ODOO_SRC, make 'import odoo' work, or install it at /opt/odoo)", file=sys.stderr
            )
            return 1
        print(odoo_src)
        return 0
    if odoo_src is None:
        print("odoo_layer: Odoo 19 not found (ODOO_SRC, import odoo, /opt/odoo)", file=sys.stderr)
        return 1
    try:
        return _run(args, extra, odoo_src)
    except subprocess.CalledProcessError as exc:
        # The command's own output (Odoo's log, psql's error) is above; no traceback on top.
        print(f"odoo_layer: {Path(exc.cmd[1]).name} exited with {exc.returncode}", file=sys.stderr)
        return exc.returncode or 1


def _run(args: argparse.Namespace, extra: list[str], odoo_src: Path) -> int:
    if args.cmd == "test":
        return cmd_test(extra, odoo_src)
    var = Path(args.data_dir)
    var.mkdir(parents=True, exist_ok=True)
    config = write_config(
        odoo_src,
        var.parent / "odoo.conf",
        data_dir=var,
        http_port=getattr(args, "port", 8069),
        extra={"log_level": "info"},
    )
    if args.cmd == "install":
        install(odoo_src, config, args.db, demo=args.demo, update=_addons_installed(args.db))
        return 0
    os.execv(sys.executable, odoo_bin(odoo_src, config, "-d", args.db, "--db-filter", f"^{args.db}$"))
    return 0  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
