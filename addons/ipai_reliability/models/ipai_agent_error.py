"""The Agent Errors console: ``ops.agent_errors`` read in place through a SQL view.

No copy: the bridge, the connector and the CLI write ``ops.agent_errors``; this
model reads it. Actions write back with SQL (status, resolution release, snooze)
and invalidate the ORM cache. Regression-by-release and snooze expiry happen in
SQL (``ops.next_status``) when an occurrence is counted; Odoo only notifies.
"""

import json
import re
from datetime import UTC, date, datetime, time

from odoo import api, fields, models
from odoo.exceptions import MissingError, UserError
from odoo.fields import Domain
from odoo.tools import SQL
from odoo.tools.date_utils import parse_date

from .ipai_failure_mode import FAMILY_SELECTION, SEVERITIES, SEVERITY_COLOR

try:
    from ipai_ops.classify.teach import TeachError, insert_example
    from ipai_ops.fingerprint import normalize_message
except ImportError:  # pragma: no cover
    insert_example = normalize_message = None
    TeachError = ValueError


STATUSES = [
    ("open", "Open"),
    ("regressed", "Regressed"),
    ("snoozed", "Snoozed"),
    ("ignored", "Ignored"),
    ("resolved", "Resolved"),
]
PARAM_REGRESSIONS_CHECKED = "ipai_reliability.regressions_checked_at"
#: A release as services report it in service.version: 1.4.2, v2.0, 2026.12.1, 1.4.2-rc.1, 1.4.2+build.5.
VERSION_RE = re.compile(r"^v?[0-9]+(\.[0-9]+){0,4}([-+][0-9A-Za-z][0-9A-Za-z.+-]{0,40})?$")

# (column, SQL type) of the view, used for the empty stand-in when ops lives elsewhere.
_COLUMNS = (
    ("id", "bigint"),
    ("fingerprint", "text"),
    ("code", "text"),
    ("source", "text"),
    ("service", "text"),
    ("message", "text"),
    ("error_type", "text"),
    ("severity", "text"),
    ("count", "bigint"),
    ("first_seen", "timestamp"),
    ("last_seen", "timestamp"),
    ("last_seen_day", "date"),
    ("status", "text"),
    ("last_trace_id", "text"),
    ("last_span_id", "text"),
    ("last_service_version", "text"),
    ("last_environment", "text"),
    ("last_gen_ai_provider", "text"),
    ("last_gen_ai_model", "text"),
    ("sample", "text"),
    ("resolved_at", "timestamp"),
    ("resolved_in_version", "text"),
    ("regressed_at", "timestamp"),
    ("snooze_until", "timestamp"),
    ("snooze_until_count", "bigint"),
    ("failure_mode_id", "integer"),
    ("assignment_id", "integer"),
    ("user_id", "integer"),
)

_VIEW_SQL = """
    SELECT e.id,
           e.fingerprint,
           e.code,
           e.source,
           e.service,
           e.message,
           e.error_type,
           e.severity,
           e.count,
           e.first_seen AT TIME ZONE 'UTC' AS first_seen,
           e.last_seen AT TIME ZONE 'UTC' AS last_seen,
           (e.last_seen AT TIME ZONE 'UTC')::date AS last_seen_day,
           e.status,
           e.last_trace_id,
           e.last_span_id,
           e.last_service_version,
           e.last_environment,
           e.last_gen_ai_provider,
           e.last_gen_ai_model,
           e.sample::text AS sample,
           e.resolved_at AT TIME ZONE 'UTC' AS resolved_at,
           e.resolved_in_version,
           e.regressed_at AT TIME ZONE 'UTC' AS regressed_at,
           e.snooze_until AT TIME ZONE 'UTC' AS snooze_until,
           e.snooze_until_count,
           (SELECT fm.id FROM ipai_failure_mode fm WHERE fm.code = e.code) AS failure_mode_id,
           (SELECT a.id FROM ipai_agent_error_assignment a WHERE a.fingerprint = e.fingerprint) AS assignment_id,
           (SELECT a.user_id FROM ipai_agent_error_assignment a WHERE a.fingerprint = e.fingerprint) AS user_id
      FROM ops.agent_errors e
"""
# Scalar subqueries, not LEFT JOINs: when a query does not select those columns
# (counts by status, the pager), PostgreSQL drops them, and the scan needs only the
# columns asked for, so a narrow index serves it index-only. A LEFT JOIN kept code and
# fingerprint needed even after join removal: counting 1M rows by status took 374 ms.
# Filters on them go through _search methods (unclassified, assigned to me, family) that
# turn into indexed conditions on ops columns instead of a subquery per row.
#
# ``family`` is not a view column: grouping 1M rows by a scalar subquery took 8.5 s
# (benchmarks/console_queries.py), since PostgreSQL runs it once per row. The ORM reads,
# groups and orders it as a lookup of ``code`` in the code -> family map, one constant per
# query (``_field_to_sql``), and filters it as ``code IN (...)`` (``_search_family``).

MATCHED_BY = [
    ("explicit", "Explicit code"),
    ("signature", "Signature"),
    ("command", "Failed command"),
    ("model", "Learned model (no signature matched)"),
    ("fallback", "Fallback (no signature matched)"),
]


#: How an evidence line is shown: (row classes, label). ``signature`` lines decided the
#: code; markers, context and the failed command are where a person reads next.
_ROLE_STYLE = {
    "signature": ("o_ipai_evidence_signature fw-bold bg-warning-subtle", "Matched the signature"),
    "command": ("o_ipai_evidence_command", "The failed command"),
    "marker": ("o_ipai_evidence_marker text-muted", "Where the step failed"),
    "context": ("o_ipai_evidence_context text-muted", "Context"),
    "passed": ("o_ipai_evidence_passed text-success", "Where the CI system says the job passed"),
    "message": ("o_ipai_evidence_message", "The error's message"),
    "type": ("o_ipai_evidence_type", "The exception type"),
}
#: Captures in reading order, with their labels; others follow alphabetically.
_CAPTURE_LABELS = {
    "test": "Failing tests",
    "location": "File:line",
    "file": "File",
    "line": "Line",
    "column": "Column",
    "package": "Package",
    "version": "Version",
    "variable": "Variable",
    "name": "Name",
    "host": "Host",
    "model": "Model",
    "tool": "Tool",
    "rule": "Rule",
    "compiler_code": "Compiler code",
    "constraint": "Constraint",
    "table": "Table",
    "action": "Action",
    "program": "Program",
    "command": "Command",
    "status": "Status",
    "exit_code": "Exit code",
}
# The sample is sender-controlled: bound what one form renders.
_MAX_ROWS = 20
_MAX_TEXT = 500
_MAX_CAPTURES = 30
_MAX_VALUES = 20


def _text(value, limit=_MAX_TEXT):
    """``value`` as display text, cut at ``limit`` characters (numbers and other JSON as text)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        value = json.dumps(value, ensure_ascii=False, default=str) if isinstance(value, (dict, list)) else str(value)
    return value if len(value) <= limit else value[:limit] + "…"


def classification_of(sample):
    """``evidence.classification`` of an envelope's JSON text, or ``None`` (older envelopes have none)."""
    if not sample:
        return None
    try:
        envelope = json.loads(sample)
    except ValueError:
        return None
    evidence = envelope.get("evidence") if isinstance(envelope, dict) else None
    data = evidence.get("classification") if isinstance(evidence, dict) else None
    return data if isinstance(data, dict) and data else None


def model_summary(model):
    """``probability 0.93; nearest labelled example: <text> (<source>)``, or False."""
    if not isinstance(model, dict):
        return False
    score, nearest = model.get("score"), model.get("nearest")
    if not isinstance(score, (int, float)) or isinstance(score, bool):
        return False
    out = f"probability {float(score):.2f}"
    if isinstance(nearest, dict) and nearest.get("text"):
        out += f"; nearest labelled example: {_text(nearest.get('text'), 200)}"
        if nearest.get("source"):
            out += f" ({_text(nearest.get('source'), 200)})"
    return out


def evidence_rows(lines):
    """Evidence lines as excerpt rows, in line order: gutter, text, classes, title; a gap row
    (``gap: True``) where lines are not adjacent in the original log."""
    if not isinstance(lines, list):
        return []
    items = []
    for position, line in enumerate(lines[:_MAX_ROWS]):
        if not isinstance(line, dict):
            continue
        number = line.get("line")
        number = number if isinstance(number, int) and not isinstance(number, bool) else None
        role = line.get("role") if line.get("role") in _ROLE_STYLE else "context"
        items.append((number is not None, number or 0, position, number, role, _text(line.get("text"))))
    items.sort()
    rows = []
    previous = None
    for __, __, __, number, role, text in items:
        if number is not None and previous is not None and number > previous + 1:
            rows.append({"gap": True})
        classes, title = _ROLE_STYLE[role]
        rows.append(
            {
                "gap": False,
                "gutter": str(number) if number is not None else role,
                "text": text,
                "classes": classes,
                "title": title,
            }
        )
        previous = number
    return rows


def capture_rows(captures):
    """Captures as ``(label, [values])`` rows; a single file and line read as ``file:line``."""
    if not isinstance(captures, dict):
        return []
    captures = {str(key): value for key, value in list(captures.items())[:_MAX_CAPTURES] if value not in (None, "", [])}
    file, line = captures.get("file"), captures.get("line")
    if isinstance(file, str) and isinstance(line, int) and not isinstance(line, bool):
        location = f"{file}:{line}"
        column = captures.get("column")
        if isinstance(column, int) and not isinstance(column, bool):
            location += f":{column}"
            captures.pop("column")
        captures = {"location": location, **{k: v for k, v in captures.items() if k not in ("file", "line")}}
    order = list(_CAPTURE_LABELS)
    rows = []
    for key in sorted(captures, key=lambda k: (order.index(k) if k in order else len(order), k)):
        value = captures[key]
        values = value[:_MAX_VALUES] if isinstance(value, list) else [value]
        label = _CAPTURE_LABELS.get(key) or key.replace("_", " ").capitalize()
        rows.append((label, [_text(v, 200) for v in values]))
    return rows


class IpaiAgentError(models.Model):
    _name = "ipai.agent.error"
    _description = "Agent error (ops.agent_errors)"
    _auto = False
    _order = "last_seen desc, id desc"
    _rec_name = "code"
    # The view joins these tables: the ORM flushes pending writes to them before reading it.
    _depends = {
        "ipai.failure.mode": ["code", "fallback", "family"],
        "ipai.agent.error.assignment": ["fingerprint", "user_id"],
    }

    fingerprint = fields.Char(readonly=True)
    code = fields.Char(readonly=True)
    source = fields.Char(readonly=True)
    service = fields.Char(readonly=True)
    message = fields.Text(readonly=True)
    error_type = fields.Char(readonly=True)
    severity = fields.Selection(SEVERITIES, readonly=True, group_expand="_group_expand_severity")
    count = fields.Integer(string="Occurrences", readonly=True, aggregator="sum")
    # read, ordered and summed in SQL (_field_to_sql) for the period the search filters on
    period_count = fields.Integer(
        string="In period",
        readonly=True,
        aggregator="sum",
        help="Occurrences since the start of the period the search filters on (Last seen: Today, Last 24 h, "
        "Last 7 days); all occurrences when the search has no period.",
    )
    first_seen = fields.Datetime(readonly=True)
    last_seen = fields.Datetime(readonly=True)
    last_seen_day = fields.Date(string="Day", readonly=True)
    status = fields.Selection(STATUSES, readonly=True)
    last_trace_id = fields.Char(string="Trace id", readonly=True)
    last_span_id = fields.Char(string="Span id", readonly=True)
    last_service_version = fields.Char(string="Service version", readonly=True)
    # the latest occurrence's (ops migration 0010): deployment.environment.name, and the
    # GenAI call it failed in (gen_ai.provider.name; gen_ai.response.model, else request.model)
    last_environment = fields.Char(string="Environment", readonly=True)
    last_gen_ai_provider = fields.Char(
        string="GenAI provider", readonly=True, help="gen_ai.provider.name of the latest occurrence."
    )
    last_gen_ai_model = fields.Char(
        string="GenAI model",
        readonly=True,
        help="The model of the latest occurrence's GenAI call: the response's, else the one requested.",
    )
    sample = fields.Text(string="Latest envelope", readonly=True)
    resolved_at = fields.Datetime(readonly=True)
    resolved_in_version = fields.Char(string="Resolved in release", readonly=True)
    regressed_at = fields.Datetime(readonly=True)
    snooze_until = fields.Datetime(string="Snoozed until", readonly=True)
    snooze_until_count = fields.Integer(string="Snoozed until count", readonly=True, aggregator=False)
    unclassified = fields.Boolean(compute="_compute_unclassified", search="_search_unclassified")
    assigned_to_me = fields.Boolean(compute="_compute_assigned_to_me", search="_search_assigned_to_me")
    failure_mode_id = fields.Many2one("ipai.failure.mode", readonly=True)
    # stored for the ORM (read, group by, order) but computed in SQL from ``code``: see _field_to_sql
    family = fields.Selection(
        FAMILY_SELECTION,
        readonly=True,
        search="_search_family",
        help="The family of the code's failure mode (test, compile, dependency, network, ...).",
    )
    assignment_id = fields.Many2one("ipai.agent.error.assignment", readonly=True)
    user_id = fields.Many2one("res.users", string="Assignee", readonly=True)
    color = fields.Integer(compute="_compute_color")
    runbook_html = fields.Html(related="failure_mode_id.runbook_html")
    failure_mode_name = fields.Char(related="failure_mode_id.name", string="Failure mode title")
    resolution_ids = fields.One2many("ipai.resolution", "error_id", string="Resolutions")
    sample_pretty = fields.Text(compute="_compute_sample_pretty", string="Envelope")
    # "Why this code": the latest envelope's evidence.classification (envelope 1.1).
    has_classification = fields.Boolean(compute="_compute_classification")
    matched_by = fields.Selection(MATCHED_BY, compute="_compute_classification", string="Decided by")
    classification_signature = fields.Char(compute="_compute_classification", string="Signature")
    classification_headline = fields.Char(compute="_compute_classification", string="Headline")
    classification_also = fields.Char(
        compute="_compute_classification", string="Also matched", help="Other codes whose signatures matched too."
    )
    classification_model = fields.Char(
        compute="_compute_classification",
        string="Model",
        help="Where the learned model decided: its probability for the code and the nearest labelled example.",
    )
    classification_html = fields.Html(compute="_compute_classification", string="Evidence", sanitize=True)
    run_count = fields.Integer(compute="_compute_run_count", string="Runs")
    # ops.error_group_keys (migration 0006): a classifier upgrade that changed this failure's
    # code attached its new key here instead of opening a new group; this is that history.
    code_history = fields.Text(
        compute="_compute_code_history",
        string="Code history",
        help="The keys that reached this group, oldest first: when a classifier upgrade changed the code of "
        "this failure, its new key joined this group (history, status and assignee kept).",
    )

    def init(self):
        ops = self.env["ipai.ops"]
        if ops.ops_is_local():
            ops.ensure_schema()
        ops.create_ops_view(self._table, select_sql=_VIEW_SQL, columns=_COLUMNS, source="ops.agent_errors")

    @api.model
    def _fallback_codes(self):
        """Codes whose errors matched no signature: the registry's fallback code(s)."""
        modes = self.env["ipai.failure.mode"].sudo().with_context(active_test=False)
        return sorted(set(modes.search([("fallback", "=", True)]).mapped("code")) | {"UNCLASSIFIED.UNKNOWN"})

    @api.depends("code")
    def _compute_unclassified(self):
        fallback = set(self._fallback_codes())
        for error in self:
            error.unclassified = error.code in fallback

    def _search_unclassified(self, operator, value):
        if operator not in ("=", "!=") or not isinstance(value, bool):
            raise UserError(self.env._("Unclassified can only be searched with = or != True/False."))
        positive = (operator == "=") == value
        return [("code", "in" if positive else "not in", self._fallback_codes())]

    @api.depends("user_id")
    def _compute_assigned_to_me(self):
        for error in self:
            error.assigned_to_me = error.user_id == self.env.user

    def _search_assigned_to_me(self, operator, value):
        if operator not in ("=", "!=") or not isinstance(value, bool):
            raise UserError(self.env._("Assigned to me can only be searched with = or != True/False."))
        mine = self.env["ipai.agent.error.assignment"].sudo().search([("user_id", "=", self.env.uid)])
        positive = (operator == "=") == value
        return [("fingerprint", "in" if positive else "not in", mine.mapped("fingerprint"))]

    @api.model
    def _family_by_code(self):
        modes = self.env["ipai.failure.mode"].sudo().with_context(active_test=False)
        return {mode.code: mode.family for mode in modes.search_fetch([], ["code", "family"])}

    @api.model
    def _group_expand_severity(self, values, domain):
        # every severity column, worst first, even when empty: the kanban reads left to right
        return [key for key, __ in SEVERITIES]

    @api.model
    def _period_start(self, domain):
        """The latest lower bound on ``last_seen`` in ``domain`` (naive UTC), or None."""
        starts = []
        for condition in Domain(domain or []).iter_conditions():
            if condition.field_expr != "last_seen" or condition.operator not in (">=", ">"):
                continue
            value = condition.value
            try:
                if isinstance(value, str):
                    value = parse_date(value, self.env)
                if isinstance(value, datetime):
                    starts.append(value)
                elif isinstance(value, date):
                    # a day starts at midnight where the user is, as the ORM reads it
                    midnight = self.env.tz.localize(datetime.combine(value, time.min))
                    starts.append(midnight.astimezone(UTC).replace(tzinfo=None))
            except ValueError:
                continue  # the search itself reports a malformed date
        return max(starts) if starts else None

    def _with_period(self, domain):
        # the value depends on the period, which the field cache does not know: read it afresh
        self.invalidate_model(["period_count"])
        start = self._period_start(domain)
        return self.with_context(ipai_period_start=fields.Datetime.to_string(start)) if start else self

    @api.model
    @api.readonly
    def web_search_read(self, domain, specification, *args, **kwargs):
        return super(IpaiAgentError, self._with_period(domain)).web_search_read(domain, specification, *args, **kwargs)

    @api.model
    @api.readonly
    def web_read_group(self, domain, groupby, aggregates=(), *args, **kwargs):
        return super(IpaiAgentError, self._with_period(domain)).web_read_group(
            domain, groupby, aggregates, *args, **kwargs
        )

    @api.model
    @api.readonly
    def formatted_read_group(self, domain, groupby=(), aggregates=(), *args, **kwargs):
        return super(IpaiAgentError, self._with_period(domain)).formatted_read_group(
            domain, groupby, aggregates, *args, **kwargs
        )

    def _period_count_sql(self, alias):
        start = self.env.context.get("ipai_period_start")
        if not start:
            return SQL.identifier(alias, "count")
        try:
            start = fields.Datetime.to_datetime(start)
        except ValueError:
            return SQL.identifier(alias, "count")
        if not self.env["ipai.ops"].ops_is_local():
            return SQL("0")
        # A group first seen inside the period: its count is exact. Otherwise count the stored
        # occurrences since the start (index agent_error_occurrences_error_idx).
        return SQL(
            "(CASE WHEN %(first)s >= %(start)s THEN %(count)s ELSE (SELECT count(*) FROM ops.agent_error_occurrences o"
            " WHERE o.error_id = %(id)s AND o.occurred_at >= %(start)s::timestamp AT TIME ZONE 'UTC') END)",
            first=SQL.identifier(alias, "first_seen"),
            start=start,
            count=SQL.identifier(alias, "count"),
            id=SQL.identifier(alias, "id"),
        )

    def _field_to_sql(self, alias, field_expr, query=None):
        if field_expr == "period_count":
            self._check_field_access(self._fields["period_count"], "read")
            return self._period_count_sql(alias)
        if field_expr != "family":
            return super()._field_to_sql(alias, field_expr, query)
        self._check_field_access(self._fields["family"], "read")
        # a jsonb object lookup per row (binary search over the keys), no subquery
        return SQL(
            "(%s::jsonb ->> %s)",
            json.dumps(self._family_by_code(), sort_keys=True),
            SQL.identifier(alias, "code"),
        )

    def _search_family(self, operator, value):
        # code IN (codes of the families): the code index, not a subquery per row
        if operator not in ("in", "not in"):
            return NotImplemented
        wanted = set(value)
        families = self._family_by_code()
        domain = Domain("code", "in", [code for code, family in families.items() if family in wanted])
        if False in wanted:  # codes without a failure mode
            domain |= Domain("code", "not in", list(families))
        return domain if operator == "in" else ~domain

    @api.depends("sample")
    def _compute_classification(self):
        for error in self:
            data = classification_of(error.sample)
            if data is None:
                error.update(
                    {
                        "has_classification": False,
                        "matched_by": False,
                        "classification_signature": False,
                        "classification_headline": False,
                        "classification_also": False,
                        "classification_model": False,
                        "classification_html": False,
                    }
                )
                continue
            matched_by = data.get("matched_by")
            also = data.get("also")
            error.update(
                {
                    "has_classification": True,
                    "matched_by": matched_by
                    if isinstance(matched_by, str) and matched_by in dict(MATCHED_BY)
                    else False,
                    "classification_signature": _text(data.get("signature"), 500) or False,
                    "classification_headline": _text(data.get("headline"), 500) or False,
                    "classification_also": ", ".join(_text(c, 100) for c in also[:10] if c)
                    if isinstance(also, list)
                    else False,
                    "classification_model": model_summary(data.get("model")),
                    "classification_html": self.env["ir.qweb"]._render(
                        "ipai_reliability.ipai_agent_error_classification",
                        {"rows": evidence_rows(data.get("lines")), "captures": capture_rows(data.get("captures"))},
                    ),
                }
            )

    @api.depends("severity")
    def _compute_color(self):
        for error in self:
            error.color = SEVERITY_COLOR.get(error.severity, 0)

    @api.depends("sample")
    def _compute_sample_pretty(self):
        for error in self:
            try:
                error.sample_pretty = json.dumps(json.loads(error.sample), indent=2) if error.sample else False
            except ValueError:
                error.sample_pretty = error.sample

    def _compute_code_history(self):
        keys = {}
        if self.ids and self.env["ipai.ops"].ops_is_local():
            self.env.cr.execute(
                SQL(
                    'SELECT error_id, "grouping", code, created_at FROM ops.error_group_keys'
                    ' WHERE error_id = ANY(%s) ORDER BY error_id, created_at, "grouping"',
                    list(self.ids),
                )
            )
            for error_id, grouping, code, created_at in self.env.cr.fetchall():
                keys.setdefault(error_id, []).append((grouping, code, created_at))
        for error in self:
            rows = keys.get(error.id, [])
            if len({code for __, code, __ in rows}) < 2:
                error.code_history = False
                continue
            error.code_history = "\n".join(
                f"{created_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC  grouping version {grouping}: {code or '-'}"
                for grouping, code, created_at in rows
            )

    def _compute_run_count(self):
        counts = dict(self.env["ipai.agent.run"]._read_group([("error_id", "in", self.ids)], ["error_id"], ["__count"]))
        for error in self:
            error.run_count = counts.get(error, 0)

    def action_view_runs(self):
        """The agent runs whose final failure is this error (``ops.agent_runs.error_id``)."""
        self.ensure_one()
        action = self.env["ir.actions.act_window"]._for_xml_id("ipai_reliability.ipai_agent_run_action")
        action.update(
            name=self.env._("Runs of %(code)s", code=self.code),
            domain=[("error_id", "=", self.id)],
            context={},
        )
        return action

    # ------------------------------------------------------------------ writing ops rows

    def _check_console(self):
        if not self.env["ipai.ops"].ops_is_local():
            raise UserError(
                self.env._(
                    "The Agent Errors console needs the ops schema in Odoo's own database; "
                    "the system parameter ipai_reliability.ops_dsn points elsewhere."
                )
            )
        if not self:
            raise UserError(self.env._("Select at least one error."))
        self.check_access("write")
        if missing := self - self.exists():
            raise MissingError(
                self.env._("Agent errors %(ids)s no longer exist.", ids=", ".join(map(str, missing.ids)))
            )

    def _ops_update(self, assignments, where_status=None):
        """``UPDATE ops.agent_errors SET <assignments> WHERE id IN self`` (+ optional status guard)."""
        self._check_console()
        query = SQL(
            "UPDATE ops.agent_errors SET %s, updated_at = now() WHERE id IN %s%s RETURNING id",
            SQL(", ").join(SQL("%s = %s", SQL.identifier(column), value) for column, value in assignments.items()),
            tuple(self.ids),
            SQL(" AND status IN %s", tuple(where_status)) if where_status else SQL(""),
        )
        self.env.cr.execute(query)
        done = {row[0] for row in self.env.cr.fetchall()}
        self.invalidate_model()
        self.env["ipai.failure.mode"].invalidate_model(["error_ids"])
        return self.browse([i for i in self.ids if i in done])

    def _resolve(self, version=None):
        version = (version or "").strip() or None
        if version is not None and not VERSION_RE.match(version):
            raise UserError(
                self.env._(
                    "A release looks like 1.4.2, v2.0 or 1.4.2-rc.1: numbers separated by dots, "
                    "optionally a -suffix (got %(version)s).",
                    version=version[:80],
                )
            )
        return self._ops_update(
            {
                "status": SQL("'resolved'"),
                "resolved_at": SQL("now()"),
                "resolved_in_version": SQL("%s", version),
                "snooze_until": SQL("NULL"),
                "snooze_until_count": SQL("NULL"),
            }
        )

    def action_resolve(self):
        """Resolved: the next occurrence (any release) re-opens it as regressed."""
        self._resolve()
        return True

    def action_resolve_in_release(self, version=None):
        """Resolved in ``version``: only occurrences from that release or later regress it."""
        if version is None:
            return self._open_wizard("resolve_release")
        if not isinstance(version, str) or not version.strip():
            raise UserError(self.env._("Enter the release the fix ships in, e.g. 1.4.2."))
        self._resolve(version)
        return True

    def action_ignore(self):
        """Ignored for good (until reopened)."""
        self._ops_update({"status": SQL("'ignored'"), "snooze_until": SQL("NULL"), "snooze_until_count": SQL("NULL")})
        return True

    def action_snooze(self, until=None, occurrences=None):
        """Snoozed until a date and/or until N more occurrences; the SQL writer reopens it."""
        if until is None and occurrences is None:
            return self._open_wizard("snooze")
        if not until and not occurrences:
            raise UserError(self.env._("Snooze until a date or for a number of occurrences."))
        if occurrences is not None and occurrences is not False:
            try:
                occurrences = int(occurrences)
            except (TypeError, ValueError):
                raise UserError(
                    self.env._(
                        "The number of occurrences must be a whole number (got %(value)s).", value=repr(occurrences)
                    )
                ) from None
            if occurrences < 1:
                raise UserError(self.env._("The number of occurrences must be at least 1."))
        if until:
            try:
                until = fields.Datetime.to_datetime(until)
            except (TypeError, ValueError):
                raise UserError(
                    self.env._(
                        "The snooze date must be a date and time, e.g. 2026-01-31 18:00:00 (got %(value)s).",
                        value=repr(until),
                    )
                ) from None
            if until <= fields.Datetime.now():
                raise UserError(self.env._("The snooze date must be in the future."))
        self._ops_update(
            {
                "status": SQL("'snoozed'"),
                "snooze_until": SQL("%s::timestamp AT TIME ZONE 'UTC'", until) if until else SQL("NULL"),
                "snooze_until_count": SQL("count + %s", occurrences) if occurrences else SQL("NULL"),
            }
        )
        return True

    def action_reopen(self):
        reopened = self._ops_update(
            {
                "status": SQL("'open'"),
                "resolved_at": SQL("NULL"),
                "resolved_in_version": SQL("NULL"),
                "snooze_until": SQL("NULL"),
                "snooze_until_count": SQL("NULL"),
            },
            where_status=("resolved", "ignored", "snoozed", "regressed"),
        )
        if not reopened:
            raise UserError(self.env._("These errors are already open."))
        return True

    def action_assign(self, user=None, note=None):
        """Assign to a user: stored Odoo-side by fingerprint (the to-do: ipai_agent_error_chatter.py)."""
        if user is None:
            return self._open_wizard("assign")
        self._check_console()
        if isinstance(user, int) and not isinstance(user, bool):
            user = self.env["res.users"].browse(user)
        if not isinstance(user, models.BaseModel) or user._name != "res.users" or len(user.exists()) != 1:
            raise UserError(self.env._("Choose a user to assign."))
        Assignment = self.env["ipai.agent.error.assignment"].sudo()
        for error in self:
            assignment = Assignment.search([("fingerprint", "=", error.fingerprint)], limit=1)
            vals = {"user_id": user.id, "code": error.code}
            if note is not None:
                vals["note"] = note
            if assignment:
                assignment.write(vals)
            else:
                assignment = Assignment.create({"fingerprint": error.fingerprint, **vals})
            # the assignee's to-do lives on the error itself (ipai_agent_error_chatter.py)
        Assignment.flush_model()
        self.invalidate_model()
        return True

    def _open_wizard(self, action):
        self._check_console()
        return {
            "type": "ir.actions.act_window",
            "res_model": "ipai.agent.error.wizard",
            "view_mode": "form",
            "target": "new",
            "name": dict(self.env["ipai.agent.error.wizard"]._fields["action"]._description_selection(self.env))[
                action
            ],
            "context": {
                "default_action": action,
                "default_error_ids": self.ids,
                **({"default_snooze_preset": "1d"} if action == "snooze" else {}),
            },
        }

    def action_create_resolution(self):
        """A resolution record prefilled from this error."""
        self.ensure_one()
        evidence = [
            self.env._("Fingerprint: %(fp)s", fp=self.fingerprint),
            self.env._(
                "Occurrences: %(count)s (%(first)s .. %(last)s UTC)",
                count=self.count,
                first=self.first_seen,
                last=self.last_seen,
            ),
        ]
        if self.last_trace_id:
            evidence.append(self.env._("Last trace: %(trace)s", trace=self.last_trace_id))
        if self.last_service_version:
            evidence.append(self.env._("Last seen in release: %(version)s", version=self.last_service_version))
        if self.message:
            evidence.append(self.env._("Message: %(message)s", message=self.message))
        return {
            "type": "ir.actions.act_window",
            "res_model": "ipai.resolution",
            "view_mode": "form",
            "target": "current",
            "name": self.env._("New resolution"),
            "context": {
                "default_name": f"{self.code}: {(self.message or '')[:80]}".strip(),
                "default_failure_mode_id": self.failure_mode_id.id,
                "default_code": self.code,
                "default_fingerprint": self.fingerprint,
                "default_error_id": self.id,
                # the owner is whoever works the error; unassigned: the person writing it
                "default_user_id": self.user_id.id or self.env.uid,
                "default_incident_start": fields.Datetime.to_string(self.first_seen),
                "default_incident_end": fields.Datetime.to_string(self.last_seen),
                "default_fixed_in_release": self.resolved_in_version or False,
                "default_evidence": "\n".join(evidence),
            },
        }

    def action_escalation_bundle(self):
        """Download this error's escalation bundle (``ipai-ops escalate <id>``): manifest,
        envelope, the error row, its newest run and the logs still on disk, redacted.

        ``id`` is the ``ops.agent_errors`` id (the view selects it), so the bundle is read
        from the ops database; it is attached to this record for whoever can read it.
        """
        self.ensure_one()
        return self.env["ipai.ops"]._escalation_bundle(str(self.id), record=self)

    def action_set_failure_code(self):
        """Open "Set failure code": a manager picks the code this error should have."""
        self.ensure_one()
        self.env["ipai.failure.mode"]._check_manager()
        return {
            "type": "ir.actions.act_window",
            "res_model": "ipai.agent.error.teach",
            "view_mode": "form",
            "target": "new",
            "name": self.env._("Set failure code"),
            "context": {"default_error_id": self.id},
        }

    @api.private
    def _teach(self, mode):
        """Teach that this error is ``mode``: its text becomes a labelled example in
        ``ops.classification_examples`` (who, when; the next ``ipai-ops classify train --taught``
        learns it), and the error, with every unclassified error of the same shape (type and
        normalised message), takes the code. Returns the errors recoded."""
        self.ensure_one()
        self.env["ipai.failure.mode"]._check_manager()
        self._check_console()
        if not mode or mode.lifecycle != "active" or mode.fallback:
            raise UserError(self.env._("Pick an active failure code other than the fallback."))
        text = (self.message or "").strip() or (self.error_type or "").strip()
        if not text:
            raise UserError(self.env._("This error has no message or type to learn from."))
        try:
            insert_example(
                self.env.cr,
                code=mode.code,
                text=text,
                error_type=self.error_type if self.message else None,
                error_id=self.id,
                previous_code=self.code,
                taught_by=self.env.user.login,
            )
        except TeachError as exc:
            raise UserError(str(exc)) from None
        same = self._same_shape_unclassified()
        recoded = (self | same)._ops_update(
            {"code": SQL("%s", mode.code), "severity": SQL("%s", mode.severity or "medium")}
        )
        self.env["ipai.failure.mode"].invalidate_model()
        return recoded

    def _same_shape_unclassified(self):
        """Unclassified errors with this error's type and normalised message (at most 10,000 looked at)."""
        self.env.cr.execute(
            SQL(
                "SELECT id, message FROM ops.agent_errors WHERE code IN %s AND id <> %s"
                " AND error_type IS NOT DISTINCT FROM %s ORDER BY id DESC LIMIT 10000",
                tuple(self._fallback_codes()),
                self.id,
                self.error_type,
            )
        )
        shape = normalize_message(self.message or "")
        return self.browse([i for i, message in self.env.cr.fetchall() if normalize_message(message or "") == shape])

    def action_create_failure_mode(self):
        """Propose a failure mode (code + signature) from an unclassified error."""
        self.ensure_one()
        self.env["ipai.failure.mode"]._check_manager()
        if not self.unclassified:
            raise UserError(
                self.env._(
                    "%(code)s is already classified; only unclassified errors get a new failure mode.", code=self.code
                )
            )
        Propose = self.env["ipai.failure.mode.propose"]
        wizard = Propose.create(Propose.proposal_for(self))
        return {
            "type": "ir.actions.act_window",
            "res_model": "ipai.failure.mode.propose",
            "res_id": wizard.id,
            "view_mode": "form",
            "target": "new",
            "name": self.env._("Create failure mode from this error"),
        }

    # ------------------------------------------------------------------ regression notifications

    @api.model
    def _cron_notify_regressions(self):
        """Notify resolution owners of errors that regressed since the last run.

        A cron (not compare-on-read): the owner hears about a regression even when
        nobody opens the console. ``regressed_at`` is set by ops.upsert_agent_error.
        """
        if not self.env["ipai.ops"].ops_is_local():
            return 0
        params = self.env["ir.config_parameter"].sudo()
        since = params.get_param(PARAM_REGRESSIONS_CHECKED) or "1970-01-01 00:00:00"
        errors = self.sudo().search([("status", "=", "regressed"), ("regressed_at", ">", since)], order="regressed_at")
        notified = 0
        for error in errors:
            notified += error._notify_regression()
        if errors:
            params.set_param(PARAM_REGRESSIONS_CHECKED, fields.Datetime.to_string(max(errors.mapped("regressed_at"))))
        return notified

    def _notify_regression(self):
        self.ensure_one()
        Resolution = self.env["ipai.resolution"].sudo()
        # the latest done resolution of this error group, else the latest one
        resolutions = Resolution.search(
            [("fingerprint", "=", self.fingerprint)], order="stage_sequence desc, id desc", limit=1
        )
        body = self.env._(
            "Regression: %(code)s occurred again at %(when)s UTC in release %(version)s "
            "after it was resolved%(release)s.",
            code=self.code,
            when=self.regressed_at,
            version=self.last_service_version or "?",
            release=self.env._(" in %s", self.resolved_in_version) if self.resolved_in_version else "",
        )
        targets = []
        if resolutions:
            targets.append((resolutions, resolutions.user_id))
        # the assignee hears it on the error itself (ipai_agent_error_chatter.py)
        for record, user in targets:
            record.message_post(
                body=body,
                partner_ids=user.partner_id.ids,
                message_type="comment",
                subtype_xmlid="mail.mt_comment",
            )
            if user:
                record.activity_schedule(
                    "mail.mail_activity_data_todo",
                    user_id=user.id,
                    summary=self.env._("Regressed: %(code)s", code=self.code),
                    note=body,
                )
        return len(targets)
