# Shared by scripts/test.sh and scripts/run.sh: the project's virtualenv, created
# and kept in step with pyproject.toml (and Odoo's requirements when Odoo is found).
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
  command -v python3 >/dev/null || die "python3 (3.10+) is required"
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' || die "Python 3.10+ is required (found $(python3 -V))"
  if [ ! -x "$PY" ]; then
    say "creating virtualenv $VENV"
    python3 -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  fi
  local src stamp want
  src="$(odoo_src || true)"
  want="$(cat "$REPO_ROOT/pyproject.toml" "$REPO_ROOT/requirements/odoo19.txt" 2>/dev/null | sha256sum | cut -c1-16):${src}"
  stamp="$VENV/.ipai-stamp"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "installing dependencies into $VENV"
    mkdir -p "$REPO_ROOT/var"
    local log="$REPO_ROOT/var/pip.log"
    "$PY" -m pip install --quiet --upgrade pip >"$log" 2>&1 || true
    "$PY" -m pip install --quiet -e "$REPO_ROOT[test]" >>"$log" 2>&1 \
      || { tail -20 "$log" >&2; die "installing the project's dependencies failed (full log: $log)"; }
    if [ -n "$src" ]; then
      say "Odoo found at $src: installing its Python dependencies"
      "$PY" -m pip install --quiet -r "$REPO_ROOT/requirements/odoo19.txt" >>"$log" 2>&1 \
        || { tail -20 "$log" >&2; die "installing Odoo's dependencies failed (full log: $log)"; }
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
