import logging

from odoo.exceptions import UserError

from .models.ipai_ops import local_dsn

_logger = logging.getLogger(__name__)


def pre_init_hook(env):
    """Create the ops schema before the console's SQL view is built over it.

    Own psycopg2 connection: ``migrate`` toggles autocommit and takes a session
    advisory lock, neither of which may touch Odoo's cursor.
    """
    from ipai_ops import store

    conn = store.connect(local_dsn(env.cr.dbname), application_name="ipai-reliability")
    try:
        applied = store.migrate(conn)
    finally:
        conn.close()
    _logger.info("ops schema ready (%s migration(s) applied)", len(applied))


def post_init_hook(env):
    """Load the failure-mode registry, then the docs/resolutions records; neither may block the install."""
    try:
        result = env["ipai.failure.mode"].sync_from_registry()
    except UserError as exc:
        _logger.warning("registry sync skipped at install: %s", exc)
        return
    _logger.info("registry sync at install: %s created", len(result["created"]))
    # Resolution records after the registry: they link to failure modes by code. Each bad
    # file is reported (logged) by the sync itself and never stops the install.
    try:
        result = env["ipai.resolution"].sync_from_markdown()
    except UserError as exc:
        _logger.warning("resolution sync skipped at install: %s", exc)
        return
    _logger.info(
        "resolution sync at install: %s imported, %s file(s) not imported",
        len(result["created"]),
        len(result["problems"]),
    )
