#!/usr/bin/env bash
# Runs every test of the project: lint, the registry check, the Python suites
# (against throwaway PostgreSQL databases it creates and drops) and, when Odoo 19
# is present, the Odoo layer (both addons installed into a fresh database, their
# tests run with pytest-odoo; then ipai_reliability installed alone, its tests run
# again: the app must stand without the connector). Under CI=true a missing Odoo is a failure.
#
#   ./scripts/test.sh              everything
#   ./scripts/test.sh -k bridge    extra arguments go to the Python pytest run
set -euo pipefail
source "$(dirname "$0")/lib/env.sh"
cd "$REPO_ROOT"
ensure_venv

say "lint: ruff"
"$VENV/bin/ruff" check . --output-format concise
"$VENV/bin/ruff" format --check . >/dev/null || { "$VENV/bin/ruff" format --check . ; die "ruff format: files need formatting"; }

say "registry and runbooks: ipai-ops ssot check --strict"
"$VENV/bin/ipai-ops" ssot check --strict

say "secrets: ipai-ops gate secrets (no secret added beyond .secrets.baseline, every secret name registered)"
"$VENV/bin/ipai-ops" gate secrets

say "classification: a model trained on the development split, then ipai-ops classify eval (floors on the signatures alone: accuracy cannot silently drop)"
model_dir="$(mktemp -d)"
trap 'rm -rf "$model_dir"' EXIT
"$VENV/bin/ipai-ops" classify train --out "$model_dir/model.json.gz"
"$VENV/bin/ipai-ops" classify eval tests/classify/corpus --model "$model_dir/model.json.gz" \
  --min-family-accuracy 0.79 --min-code-accuracy 0.81 --min-evidence-hit 0.80 \
  --max-fallback 0.16 --max-false-positive 0.03

say "python tests (PostgreSQL at ${IPAI_TEST_PG:-postgresql://postgres@127.0.0.1:5432/postgres})"
"$PY" -m pytest tests -n "${IPAI_TEST_WORKERS:-2}" -p no:cacheprovider "$@"

src="$(odoo_src || true)"
if [ -d addons ] && ls addons/*/__manifest__.py >/dev/null 2>&1; then
  if [ -z "$src" ]; then
    if [ "${CI:-}" = "true" ]; then
      die "Odoo 19 not found (ODOO_SRC, 'import odoo', /opt/odoo): the Odoo layer cannot run under CI"
    fi
    say "Odoo 19 not found: skipping the Odoo layer (set ODOO_SRC to run it)"
    exit 0
  fi
  say "odoo: pylint-odoo mandatory checks"
  "$VENV/bin/pylint" --rcfile=.pylintrc-mandatory addons/*/
  say "odoo: install both addons into a fresh database and run their tests (Odoo at $src)"
  "$PY" scripts/odoo_layer.py test
  say "odoo: ipai_reliability alone (without ipai_pulser_connector) passes its own tests"
  "$PY" scripts/odoo_layer.py test --only ipai_reliability
fi
