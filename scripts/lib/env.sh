# Shared by scripts/test.sh and scripts/run.sh: the project's virtualenv, created and kept
# in step with the hashed lock files of requirements/lock/ (scripts/lock.sh): dev-odoo19.txt
# when Odoo is found (Odoo 19's own pins win there), else dev.txt.
# shellcheck shell=bash

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${IPAI_VENV:-$REPO_ROOT/.venv}"
PY="$VENV/bin/python"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# The Odoo 19 source tree: ODOO_SRC, else an importable odoo, else /opt/odoo.
odoo_src() {
  local py="${PY}"
  [ -x "$py" ] || py=python3
  "$py" "$REPO_ROOT/scripts/odoo_layer.py" locate 2>/dev/null
}

ensure_venv() {
  command -v python3 >/dev/null || die "python3 (3.11+) is required"
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "Python 3.11+ is required (found $(python3 -V))"
  if [ ! -x "$PY" ]; then
    say "creating virtualenv $VENV"
    python3 -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  fi
  local src stamp want lock
  src="$(odoo_src || true)"
  lock="$REPO_ROOT/requirements/lock/dev.txt"
  [ -n "$src" ] && lock="$REPO_ROOT/requirements/lock/dev-odoo19.txt"
  want="$(cat "$REPO_ROOT/pyproject.toml" "$lock" | sha256sum | cut -c1-16):${src}"
  stamp="$VENV/.ipai-stamp"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "installing dependencies into $VENV from ${lock#"$REPO_ROOT"/}"
    mkdir -p "$REPO_ROOT/var"
    local log="$REPO_ROOT/var/pip.log"
    "$PY" -m pip install --quiet --upgrade pip >"$log" 2>&1 || true
    # Every package at its locked version, each file checked against its hash; --no-deps: the
    # lock is complete, and where Odoo's pins override a range (Werkzeug 2.2.2 under moto's
    # Flask) pip's resolver would refuse what Odoo needs. Then the project itself (editable).
    "$PY" -m pip install --quiet --require-hashes --no-deps -r "$lock" >>"$log" 2>&1 \
      || { tail -20 "$log" >&2; die "installing the locked dependencies failed (full log: $log)"; }
    "$PY" -m pip install --quiet --no-deps -e "$REPO_ROOT" >>"$log" 2>&1 \
      || { tail -20 "$log" >&2; die "installing the project failed (full log: $log)"; }
    if [ -n "$src" ]; then
      # Odoo runs from its source tree: a .pth makes 'import odoo' work in the venv.
      "$PY" - "$src" <<'PYEOF'
import sys, sysconfig, pathlib
pathlib.Path(sysconfig.get_paths()["purelib"], "odoo-src.pth").write_text(sys.argv[1] + "\n")
PYEOF
      "$PY" -c 'import odoo.release' || die "Odoo at $src does not import"
    fi
    echo "$want" > "$stamp"
  fi
}
