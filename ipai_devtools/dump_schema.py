"""Regenerate ``ipai_ops/store/schema.sql`` from the migrations.

    python -m ipai_devtools.dump_schema [--check]

Applies every migration to a throwaway database and writes ``pg_dump
--schema-only`` of the ``ops`` schema (normalised). ``tests/store`` proves
the file matches what the migrations produce, so a migration added without
regenerating it fails CI. ``IPAI_TEST_PG`` names the server's maintenance
database (default ``postgresql://postgres@127.0.0.1:5432/postgres``).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

from ipai_devtools.scratch import throwaway_database

#: The generated file lives beside the migrations it is generated from, in the product package.
SCHEMA_FILE = Path(__file__).resolve().parent.parent / "ipai_ops" / "store" / "schema.sql"
HEADER = (
    "-- The ops schema as the migrations leave it (generated: python -m ipai_devtools.dump_schema).\n"
    "-- Do not edit by hand: add a migration, then regenerate. A test compares the two.\n"
)


def normalise(dump: str) -> str:
    lines = []
    for line in dump.splitlines():
        if line.startswith(("--", "\\restrict", "\\unrestrict")):
            continue
        lines.append(line.rstrip())
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def pg_dump_ops(dsn: str) -> str:
    exe = shutil.which("pg_dump")
    if exe is None:
        raise SystemExit("pg_dump not found: install the PostgreSQL client (Debian: postgresql-client)")
    out = subprocess.run(
        [
            exe,
            "--schema-only",
            "--schema=ops",
            "--no-owner",
            "--no-privileges",
            "--exclude-table=ops.schema_migrations",
            dsn,
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return normalise(out.stdout)


def dump_from_migrations() -> str:
    with throwaway_database("ipai_schema", migrate=True) as dsn:
        return pg_dump_ops(dsn)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if schema.sql is out of date")
    args = parser.parse_args(argv)
    content = HEADER + dump_from_migrations()
    if args.check:
        current = SCHEMA_FILE.read_text(encoding="utf-8") if SCHEMA_FILE.exists() else ""
        if current != content:
            print(f"{SCHEMA_FILE} is out of date: run python -m ipai_devtools.dump_schema", file=sys.stderr)
            return 1
        print(f"{SCHEMA_FILE} is up to date")
        return 0
    SCHEMA_FILE.write_text(content, encoding="utf-8")
    print(f"wrote {SCHEMA_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
