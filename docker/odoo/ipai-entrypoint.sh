#!/bin/bash
# Entry point of the ipai Odoo image (wraps the official /entrypoint.sh, which waits for
# PostgreSQL and passes HOST/PORT/USER/PASSWORD to Odoo as --db_* arguments).
#
#   serve   (default) first start: create $ODOO_DB and install ipai_reliability and
#           ipai_pulser_connector (demo data when ODOO_WITH_DEMO=true); then run Odoo on it
#   update  upgrade both addons in $ODOO_DB and exit (after pulling a new image)
#   *       anything else runs as given (e.g. "odoo shell -d ipai")
set -euo pipefail

: "${HOST:=postgres}" "${PORT:=5432}" "${USER:=odoo}" "${PASSWORD:=odoo}"
: "${ODOO_DB:=ipai}" "${ODOO_WITH_DEMO:=true}"
export HOST PORT USER PASSWORD
MODULES="ipai_reliability,ipai_pulser_connector"

installed_count() {
  PGPASSWORD="$PASSWORD" psql -h "$HOST" -p "$PORT" -U "$USER" -d "$ODOO_DB" -tAc \
    "SELECT count(*) FROM ir_module_module WHERE name IN ('ipai_reliability', 'ipai_pulser_connector') AND state = 'installed'" \
    2>/dev/null || echo 0
}

case "${1:-serve}" in
  serve)
    if [ "$(installed_count)" != "2" ]; then
      echo "ipai: installing $MODULES into database $ODOO_DB (first start; demo data: $ODOO_WITH_DEMO)"
      extra=()
      [ "$ODOO_WITH_DEMO" = "true" ] && extra+=(--with-demo)
      /entrypoint.sh odoo -d "$ODOO_DB" -i "$MODULES" "${extra[@]}" --stop-after-init
    fi
    exec /entrypoint.sh odoo -d "$ODOO_DB" --db-filter "^${ODOO_DB}\$"
    ;;
  update)
    exec /entrypoint.sh odoo -d "$ODOO_DB" -u "$MODULES" --stop-after-init
    ;;
  *)
    exec /entrypoint.sh "$@"
    ;;
esac
