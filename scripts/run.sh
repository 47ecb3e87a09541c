#!/usr/bin/env bash
# The main job on one machine (no Docker needed): the project's virtualenv, the ops
# schema in PostgreSQL, the OTLP bridge, and, when Odoo 19 is found, Odoo with both
# addons installed on a database with demo data. Safe to run again.
#
#   ./scripts/run.sh          start (or confirm running) everything, print the URLs
#   ./scripts/run.sh stop     stop what it started
#   ./scripts/run.sh status   what is running
#
# Settings (environment): IPAI_DB (database name, default "ipai"), PGHOST/PGPORT/PGUSER
# (default 127.0.0.1 / 5432 / the current user), IPAI_OPS_DSN (default: that database),
# IPAI_BRIDGE_HTTP_PORT (4318), IPAI_BRIDGE_GRPC_PORT (4317), ODOO_PORT (8069), ODOO_SRC.
set -euo pipefail
source "$(dirname "$0")/lib/env.sh"
cd "$REPO_ROOT"

VAR="$REPO_ROOT/var"
DB="${IPAI_DB:-ipai}"
PGHOST="${PGHOST:-127.0.0.1}"
PGPORT="${PGPORT:-5432}"
PGUSER="${PGUSER:-$(id -un)}"
export PGHOST PGPORT PGUSER
export IPAI_OPS_DSN="${IPAI_OPS_DSN:-postgresql://${PGUSER}@${PGHOST}:${PGPORT}/${DB}}"
HTTP_PORT="${IPAI_BRIDGE_HTTP_PORT:-4318}"
GRPC_PORT="${IPAI_BRIDGE_GRPC_PORT:-4317}"
ODOO_PORT="${ODOO_PORT:-8069}"
mkdir -p "$VAR"

running() { [ -f "$VAR/$1.pid" ] && kill -0 "$(cat "$VAR/$1.pid")" 2>/dev/null; }

stop_one() {
  if running "$1"; then
    kill "$(cat "$VAR/$1.pid")" && say "stopped $1"
  fi
  rm -f "$VAR/$1.pid"
}

wait_http() {  # url, name, log
  for _ in $(seq 1 120); do
    if "$PY" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)" "$1" 2>/dev/null; then
      return 0
    fi
    sleep 1
  done
  die "$2 did not come up on $1 (see $3)"
}

case "${1:-start}" in
  stop)
    stop_one odoo
    stop_one bridge
    exit 0
    ;;
  status)
    for svc in bridge odoo; do
      if running "$svc"; then echo "$svc: running (pid $(cat "$VAR/$svc.pid"))"; else echo "$svc: stopped"; fi
    done
    exit 0
    ;;
  start) ;;
  *) die "usage: $0 [start|stop|status]" ;;
esac

ensure_venv

command -v psql >/dev/null || die "psql not found: install the PostgreSQL client (Debian: postgresql-client)"
psql -d postgres -tAc 'SELECT 1' >/dev/null 2>&1 \
  || die "PostgreSQL is not reachable as ${PGUSER}@${PGHOST}:${PGPORT} (start it, or set PGHOST/PGPORT/PGUSER)"
if [ "$(psql -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != "1" ]; then
  say "creating database $DB"
  createdb "$DB"
fi

say "ops schema: ipai-ops db migrate"
"$VENV/bin/ipai-ops" db migrate

# The learned layer of classification: trained from the registry, the corpus and the examples
# people taught (ops.classification_examples) when the registry, the corpus or the model's
# code (its artifact format) changed since the last training (about 15 s; after teaching, run
# 'ipai-ops classify train --taught'); the bridge and Odoo pick up a new artifact without a
# restart. A failed training leaves the signatures alone in charge.
model="${IPAI_OPS_MODEL:-$VAR/classify/model.json.gz}"
if [ "$model" != "off" ] && { [ ! -f "$model" ] || [ -n "$(find ssot/errors/failure_modes.yaml tests/classify/corpus ipai_ops/classify/model.py -newer "$model" -print -quit)" ]; }; then
  say "classification model: ipai-ops classify train"
  "$VENV/bin/ipai-ops" classify train --taught --out "$model" || say "training failed: classification by signatures only"
fi

if running bridge; then
  say "bridge already running (pid $(cat "$VAR/bridge.pid"))"
else
  say "starting the OTLP bridge (HTTP :$HTTP_PORT, gRPC :$GRPC_PORT)"
  # Loopback only, no token: the local Odoo sends its telemetry here, so its reserved source
  # 'odoo' is granted too (docs/bridge.md, "Senders and sources"); set a token before opening the port.
  IPAI_BRIDGE_TOKEN_SOURCES="${IPAI_BRIDGE_TOKEN_SOURCES:-*,odoo}" \
    nohup "$VENV/bin/ipai-ops" bridge serve --host 127.0.0.1 --http-port "$HTTP_PORT" --grpc-port "$GRPC_PORT" \
    >"$VAR/bridge.log" 2>&1 &
  echo $! >"$VAR/bridge.pid"
  wait_http "http://127.0.0.1:$HTTP_PORT/healthz" bridge "$VAR/bridge.log"
fi

src="$(odoo_src || true)"
if [ -n "$src" ]; then
  if running odoo; then
    say "Odoo already running (pid $(cat "$VAR/odoo.pid"))"
  else
    # Install on a new database; upgrade only when the addons changed since the last run.
    addons_hash="$(find addons -type f -not -path '*/__pycache__/*' -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)"
    if [ "$(cat "$VAR/addons-$DB.hash" 2>/dev/null)" != "$addons_hash" ]; then
      say "Odoo 19 at $src: installing/upgrading ipai_reliability and ipai_pulser_connector on $DB (demo data)"
      ODOO_DB_USER="$PGUSER" ODOO_DB_HOST="$PGHOST" ODOO_DB_PORT="$PGPORT" \
        "$PY" scripts/odoo_layer.py install --db "$DB" --demo >"$VAR/odoo-install.log" 2>&1 \
        || die "installing the addons failed (see $VAR/odoo-install.log)"
      echo "$addons_hash" >"$VAR/addons-$DB.hash"
    else
      say "addons unchanged since the last run: no upgrade"
    fi
    say "starting Odoo on :$ODOO_PORT"
    ODOO_DB_USER="$PGUSER" ODOO_DB_HOST="$PGHOST" ODOO_DB_PORT="$PGPORT" \
      nohup "$PY" scripts/odoo_layer.py serve --db "$DB" --port "$ODOO_PORT" >"$VAR/odoo.log" 2>&1 &
    echo $! >"$VAR/odoo.pid"
    wait_http "http://127.0.0.1:$ODOO_PORT/web/login" Odoo "$VAR/odoo.log"
  fi
else
  say "Odoo 19 not found (ODOO_SRC, 'import odoo', /opt/odoo): running the bridge and the ops schema only"
fi

# Sample data, so every view has real content on first login: once per database and demo
# content (the marker holds 'ipai-ops demo --content-digest'), so a database demoed before the
# demo gained rows gets them; running it again doubles nothing (docs/deploy.md, "The demo").
demo_digest="$("$VENV/bin/ipai-ops" demo --content-digest)"
if [ "$(cat "$VAR/demo-$DB.done" 2>/dev/null)" != "$demo_digest" ]; then
  say "sample data: ipai-ops demo (agent telemetry through the bridge${src:+, intents into Odoo})"
  demo_args=(--otlp-endpoint "http://127.0.0.1:$HTTP_PORT" --odoo-url "http://127.0.0.1:$ODOO_PORT" --odoo-db "$DB")
  [ -n "$src" ] || demo_args+=(--no-intents)
  if "$VENV/bin/ipai-ops" demo "${demo_args[@]}" >"$VAR/demo.log" 2>&1; then
    echo "$demo_digest" >"$VAR/demo-$DB.done"
  else
    say "sample data incomplete (see $VAR/demo.log); the services are up"
  fi
fi

cat <<EOF

  ops database     $IPAI_OPS_DSN
  OTLP/HTTP        http://127.0.0.1:$HTTP_PORT/v1/traces  /v1/logs   (health: /healthz, metrics: /metrics)
  OTLP/gRPC        127.0.0.1:$GRPC_PORT
EOF
if [ -n "$src" ]; then
  cat <<EOF
  Odoo             http://127.0.0.1:$ODOO_PORT   (login: admin / admin) -> Reliability app
EOF
fi
cat <<EOF
  errors           $VENV/bin/ipai-ops errors list
  logs             $VAR/*.log
  stop             ./scripts/run.sh stop
EOF
