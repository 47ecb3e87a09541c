#!/usr/bin/env bash
# The hashed lock files every install uses, from pyproject.toml's ranges (uv pip compile):
#
#   requirements/lock/runtime.txt     core + [bridge]: the bridge image, CI's gate jobs, a plain install
#   requirements/lock/dev.txt         core + every extra: scripts/run.sh and test.sh without Odoo
#   requirements/lock/dev-odoo19.txt  the same with Odoo 19's pins (requirements/odoo19.txt) winning:
#                                     run.sh and test.sh with Odoo, CI's tests job
#   requirements/lock/odoo-image.txt  core + [odoo] for the odoo:19 image (Python 3.12), without
#                                     psycopg2-binary (the image's psycopg2 serves ipai_ops too)
#
#   ./scripts/lock.sh             re-resolve, keeping every pin that still fits (after editing pyproject.toml)
#   ./scripts/lock.sh --upgrade   move every pin to the newest version the ranges allow
#
# Install from a lock with hashes, then the project without resolving again:
#   pip install --require-hashes -r requirements/lock/runtime.txt && pip install --no-deps .
set -euo pipefail
source "$(dirname "$0")/lib/env.sh"
cd "$REPO_ROOT"

uv="$VENV/bin/uv"
[ -x "$uv" ] || uv="$(command -v uv)" || die "uv not found: ./scripts/test.sh installs it into $VENV (the test extra)"
extra=()
[ "${1:-}" = "--upgrade" ] && extra+=(--upgrade)
mkdir -p requirements/lock

compile() {  # output, then uv pip compile arguments
  local out="$1"
  shift
  say "$out"
  # --universal: one file for every Python >= the given one and every platform (markers
  # where they differ); --custom-compile-command: the header names this script.
  "$uv" pip compile --quiet --universal --generate-hashes --custom-compile-command "./scripts/lock.sh" \
    "${extra[@]}" -o "$out" "$@"
}

compile requirements/lock/runtime.txt pyproject.toml --extra bridge --python-version 3.11
compile requirements/lock/dev.txt pyproject.toml --all-extras --python-version 3.11
# Odoo's pins override the project's ranges (e.g. requests 2.31.0, Werkzeug 2.2.2,
# cryptography 3.4.8 for Python 3.11): inside Odoo's virtualenv Odoo's tested versions win.
compile requirements/lock/dev-odoo19.txt pyproject.toml requirements/odoo19.txt \
  --override requirements/odoo19.txt --all-extras --python-version 3.11
compile requirements/lock/odoo-image.txt pyproject.toml --extra odoo --python-version 3.12 \
  --no-emit-package psycopg2-binary
