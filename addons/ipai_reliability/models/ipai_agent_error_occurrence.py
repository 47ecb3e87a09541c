"""Occurrences of an agent error: ``ops.agent_error_occurrences`` read in place through a SQL view.

The table's key is ``(source, occurrence_id)``; the ORM needs one integer. The view's
``id`` is the row's physical address (``ctid``: block * 65536 + offset) and reading
records by id adds ``row_tid = ANY(...)`` (``_as_query``), which PostgreSQL answers with a
TID scan: a page of occurrences costs a few heap fetches whatever the table's size,
where an id computed from the key (a hash) would scan the whole table. Occurrences are
only inserted and deleted, never updated, so an id is stable while its row exists (a
``VACUUM FULL`` or a merge that moves rows gives new ids; an open page then reads the
record as gone, it never reads another one).

Columns a writer adds later (migration 0010's ``environment``, for instance) are picked
up by listing them in ``_OPTIONAL_COLUMNS`` with a field of the same name: the view
selects them when the table has them and NULL otherwise, so the addon works on either
side of the migration. The view is rebuilt on every module install and upgrade.
"""

import re
from urllib.parse import quote, urlsplit

from markupsafe import Markup
from odoo import api, fields, models
from odoo.fields import Domain
from odoo.orm.domains import DomainAnd, DomainCondition
from odoo.tools import SQL

PARAM_TRACE_URL = "ipai_reliability.trace_url_template"
TRACE_PLACEHOLDER = "{trace_id}"
_MAX_TEMPLATE = 2048
# W3C trace ids are 32 lowercase hex digits; Jaeger and Zipkin also show 16-digit ones.
_TRACE_ID_RE = re.compile(r"^[0-9a-fA-F]{16,32}$")

# (column, SQL type, expression) the view always selects.
_BASE_COLUMNS = (
    ("id", "bigint", "((o.ctid::text::point)[0]::bigint * 65536 + (o.ctid::text::point)[1]::bigint)"),
    ("row_tid", "tid", "o.ctid"),
    ("error_id", "bigint", "o.error_id"),
    ("source", "text", "o.source"),
    ("occurrence_id", "text", "o.occurrence_id"),
    ("occurred_at", "timestamp", "o.occurred_at AT TIME ZONE 'UTC'"),
    ("received_at", "timestamp", "o.received_at AT TIME ZONE 'UTC'"),
    ("trace_id", "text", "o.trace_id"),
    ("span_id", "text", "o.span_id"),
    ("service_version", "text", "o.service_version"),
)
# (column, SQL type, expression when the table lacks the column). An occurrence row has no
# service of its own (yet): the error's service stands in; a scalar subquery, so lists
# that do not show it do not pay for it.
_OPTIONAL_COLUMNS = (
    ("service", "text", "(SELECT e.service FROM ops.agent_errors e WHERE e.id = o.error_id)"),
    ("environment", "text", "NULL::text"),
    ("gen_ai_provider", "text", "NULL::text"),
    ("gen_ai_operation", "text", "NULL::text"),
    ("gen_ai_request_model", "text", "NULL::text"),
    ("gen_ai_response_model", "text", "NULL::text"),
    ("gen_ai_input_tokens", "bigint", "NULL::bigint"),
    ("gen_ai_output_tokens", "bigint", "NULL::bigint"),
)


def check_trace_url_template(template):
    """The problem with a trace URL template, or None when it is usable (empty is: no links).

    Only http and https (a ``javascript:`` or ``data:`` link would run in the console), a
    host, and the ``{trace_id}`` placeholder; no whitespace or control characters.
    """
    template = (template or "").strip()
    if not template:
        return None
    if len(template) > _MAX_TEMPLATE:
        return f"is longer than {_MAX_TEMPLATE} characters"
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in template):
        return "contains spaces or control characters"
    if TRACE_PLACEHOLDER not in template:
        return f"does not contain {TRACE_PLACEHOLDER}"
    try:
        parts = urlsplit(template.replace(TRACE_PLACEHOLDER, "0" * 32))
    except ValueError as exc:
        return f"is not a URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return "must start with http:// or https://"
    if not parts.hostname:
        return "has no host"
    return None


def trace_url(template, trace_id):
    """``template`` with ``{trace_id}`` filled in, or None (no template, an invalid one, or no
    usable trace id). The id is hex-checked and quoted: a sender's value never shapes the URL."""
    template = (template or "").strip()
    if not template or not trace_id or check_trace_url_template(template) is not None:
        return None
    if not _TRACE_ID_RE.match(trace_id):
        return None
    return template.replace(TRACE_PLACEHOLDER, quote(trace_id.lower(), safe=""))


def trace_link(url, trace_id):
    """``<a href=url>trace_id</a>`` (escaped), the bare id when there is no URL, or False."""
    if not trace_id:
        return False
    if not url:
        return Markup('<span class="font-monospace">{}</span>').format(trace_id)
    return Markup(
        '<a class="font-monospace" href="{}" target="_blank" rel="noopener noreferrer" title="Open the trace">{}</a>'
    ).format(url, trace_id)


class IpaiAgentErrorOccurrence(models.Model):
    _name = "ipai.agent.error.occurrence"
    _description = "Agent error occurrence (ops.agent_error_occurrences)"
    _auto = False
    _order = "occurred_at desc, id desc"
    _rec_name = "occurrence_id"

    error_id = fields.Many2one("ipai.agent.error", readonly=True)
    source = fields.Char(readonly=True)
    occurrence_id = fields.Char(string="Occurrence id", readonly=True)
    occurred_at = fields.Datetime(string="Time", readonly=True)
    received_at = fields.Datetime(readonly=True)
    trace_id = fields.Char(string="Trace id", readonly=True)
    span_id = fields.Char(string="Span id", readonly=True)
    service_version = fields.Char(string="Release", readonly=True)
    service = fields.Char(readonly=True, help="The occurrence's service; the error's service where rows carry none.")
    environment = fields.Char(readonly=True)
    gen_ai_provider = fields.Char(string="GenAI provider", readonly=True)
    gen_ai_operation = fields.Char(string="GenAI operation", readonly=True)
    gen_ai_request_model = fields.Char(string="Requested model", readonly=True)
    gen_ai_response_model = fields.Char(string="Model", readonly=True)
    gen_ai_input_tokens = fields.Integer(string="Input tokens", readonly=True, aggregator="sum")
    gen_ai_output_tokens = fields.Integer(string="Output tokens", readonly=True, aggregator="sum")
    trace_link = fields.Html(compute="_compute_trace_link", string="Trace", sanitize=True)

    @api.model
    def _view_sql(self):
        """The view's SELECT for the occurrence table as it is now (see ``_OPTIONAL_COLUMNS``)."""
        self.env.cr.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = 'ops' AND table_name = 'agent_error_occurrences'"
        )
        present = {row[0] for row in self.env.cr.fetchall()}
        selects = [f"{expr} AS {name}" for name, __, expr in _BASE_COLUMNS]
        selects += [
            f"o.{name} AS {name}" if name in present else f"{expr} AS {name}" for name, __, expr in _OPTIONAL_COLUMNS
        ]
        return "SELECT " + ",\n       ".join(selects) + "\n  FROM ops.agent_error_occurrences o"

    def init(self):
        ops = self.env["ipai.ops"]
        source = "ops.agent_error_occurrences"
        ready = ops.ops_schema_ready(source)
        ops.create_ops_view(
            self._table,
            select_sql=self._view_sql() if ready else "",
            columns=[(name, typ) for name, typ, __ in _BASE_COLUMNS + _OPTIONAL_COLUMNS],
            source=source,
        )

    def _where_tids(self, query, ids):
        """Add ``row_tid = ANY(<addresses of ids>)`` to ``query``: the same rows, found by a TID
        scan instead of computing every row's id (module docstring)."""
        tids = [f"({i >> 16},{i & 0xFFFF})" for i in ids if isinstance(i, int) and not isinstance(i, bool) and i >= 0]
        if tids:
            query.add_where(SQL("%s = ANY(%s::tid[])", SQL.identifier(self._table, "row_tid"), tids))
        return query

    def _as_query(self, ordered=True):
        # reading records by id
        return self._where_tids(super()._as_query(ordered), self._ids)

    @api.model
    def _search(self, domain, offset=0, limit=None, order=None, **kwargs):
        # ('id', 'in', ids) at the top of a search (the web client re-sorting a page of a
        # one2many, access filtering): the same condition by address
        query = super()._search(domain, offset, limit, order, **kwargs)
        domain = Domain(domain)
        for condition in domain.children if isinstance(domain, DomainAnd) else (domain,):
            if (
                isinstance(condition, DomainCondition)
                and condition.field_expr == "id"
                and condition.operator == "in"
                and isinstance(condition.value, (list, tuple, set, frozenset))
            ):
                return self._where_tids(query, condition.value)
        return query

    @api.model
    def _trace_url_template(self):
        return self.env["ir.config_parameter"].sudo().get_param(PARAM_TRACE_URL) or ""

    @api.depends("trace_id")
    def _compute_trace_link(self):
        template = self._trace_url_template()
        for occurrence in self:
            occurrence.trace_link = trace_link(trace_url(template, occurrence.trace_id), occurrence.trace_id)
