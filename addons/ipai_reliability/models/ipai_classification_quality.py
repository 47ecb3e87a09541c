"""Classification quality: how errors got their codes, and how often people corrected them.

Two SQL views over the ops schema (read in place, nothing copied):

* ``ipai.classification.quality``: one row per error group, with what decided its code
  (signature, failed command, learned model, explicit code, a person, or the fallback), so
  coverage over time and the share of each is a graph, and the unclassified backlog by
  volume a pivot;
* ``ipai.classification.code.quality``: one row per code: the errors it has, the taught
  examples, and the corrections people made away from it, hence the code's precision as
  people judged it.
"""

from odoo import fields, models

DECIDED_BY = [
    ("signature", "Signature"),
    ("command", "Failed command"),
    ("model", "Learned model"),
    ("explicit", "Explicit code"),
    ("person", "A person (taught)"),
    ("fallback", "Fallback (unclassified)"),
    ("unknown", "Not recorded"),
]

_FALLBACK = "'UNCLASSIFIED.UNKNOWN'"

_QUALITY_COLUMNS = (
    ("id", "bigint"),
    ("code", "text"),
    ("source", "text"),
    ("service", "text"),
    ("first_seen", "timestamp"),
    ("last_seen", "timestamp"),
    ("occurrences", "bigint"),
    ("decided_by", "text"),
    ("unclassified", "boolean"),
    ("taught", "boolean"),
)

_QUALITY_SQL = f"""
    SELECT e.id,
           e.code,
           e.source,
           e.service,
           e.first_seen AT TIME ZONE 'UTC' AS first_seen,
           e.last_seen AT TIME ZONE 'UTC' AS last_seen,
           e.count AS occurrences,
           CASE WHEN t.error_id IS NOT NULL THEN 'person'
                WHEN e.code = {_FALLBACK} THEN 'fallback'
                WHEN e.sample #>> '{{error,matched_by}}' IN ('signature', 'command', 'model', 'explicit')
                THEN e.sample #>> '{{error,matched_by}}'
                ELSE 'unknown' END AS decided_by,
           e.code = {_FALLBACK} AS unclassified,
           t.error_id IS NOT NULL AS taught
      FROM ops.agent_errors e
      LEFT JOIN (SELECT DISTINCT error_id FROM ops.classification_examples WHERE error_id IS NOT NULL) t
             ON t.error_id = e.id
"""

_CODE_COLUMNS = (
    ("id", "bigint"),
    ("code", "text"),
    ("errors", "bigint"),
    ("occurrences", "bigint"),
    ("taught", "bigint"),
    ("corrected_to", "bigint"),
    ("corrected_away", "bigint"),
    ("taught_errors", "bigint"),
)

# A correction: a person taught another code for an error that had this one (not the fallback).
_CODE_SQL = f"""
    WITH codes AS (
        SELECT code, count(*) AS errors, sum(count) AS occurrences FROM ops.agent_errors GROUP BY code
    ), examples AS (
        SELECT code, previous_code, error_id FROM ops.classification_examples
    ), names AS (
        SELECT code FROM codes UNION SELECT code FROM examples
        UNION SELECT previous_code FROM examples WHERE previous_code IS NOT NULL
    )
    SELECT row_number() OVER (ORDER BY n.code) AS id,
           n.code,
           coalesce(c.errors, 0) AS errors,
           coalesce(c.occurrences, 0) AS occurrences,
           (SELECT count(*) FROM examples x WHERE x.code = n.code) AS taught,
           (SELECT count(*) FROM examples x WHERE x.code = n.code AND x.previous_code IS DISTINCT FROM x.code
               AND x.previous_code IS NOT NULL AND x.previous_code <> {_FALLBACK}) AS corrected_to,
           (SELECT count(*) FROM examples x WHERE x.previous_code = n.code AND x.code <> n.code) AS corrected_away,
           (SELECT count(DISTINCT x.error_id) FROM examples x WHERE x.code = n.code) AS taught_errors
      FROM names n LEFT JOIN codes c ON c.code = n.code
     WHERE n.code <> {_FALLBACK}
"""


class IpaiClassificationQuality(models.Model):
    _name = "ipai.classification.quality"
    _description = "Classification quality: how each error group got its code"
    _auto = False
    _order = "first_seen desc, id desc"
    _rec_name = "code"

    code = fields.Char(readonly=True)
    source = fields.Char(readonly=True)
    service = fields.Char(readonly=True)
    first_seen = fields.Datetime(readonly=True)
    last_seen = fields.Datetime(readonly=True)
    occurrences = fields.Integer(readonly=True, aggregator="sum")
    decided_by = fields.Selection(DECIDED_BY, readonly=True)
    unclassified = fields.Boolean(readonly=True)
    taught = fields.Boolean(readonly=True, help="A person set this error's code (a taught example).")

    def init(self):
        self.env["ipai.ops"].create_ops_view(
            self._table, select_sql=_QUALITY_SQL, columns=_QUALITY_COLUMNS, source="ops.classification_examples"
        )


class IpaiClassificationCodeQuality(models.Model):
    _name = "ipai.classification.code.quality"
    _description = "Classification quality per code: errors, taught examples and corrections"
    _auto = False
    _order = "corrected_away desc, errors desc, code"
    _rec_name = "code"

    code = fields.Char(readonly=True)
    errors = fields.Integer(readonly=True, aggregator="sum")
    occurrences = fields.Integer(readonly=True, aggregator="sum")
    taught = fields.Integer(string="Taught examples", readonly=True, aggregator="sum")
    corrected_to = fields.Integer(
        string="Corrected to", readonly=True, aggregator="sum", help="Errors people moved to this code from another."
    )
    corrected_away = fields.Integer(
        string="Corrected away",
        readonly=True,
        aggregator="sum",
        help="Errors that had this code and that people moved to another: the classifier was wrong.",
    )
    taught_errors = fields.Integer(readonly=True, aggregator="sum", help="Errors a person gave this code.")
    precision = fields.Float(
        compute="_compute_precision",
        digits=(16, 3),
        help="As people judged it: of the errors the classifier gave this code, the share nobody corrected.",
    )

    def _compute_precision(self):
        for row in self:
            # the errors the classifier gave this code: those that have it, less those a person
            # gave it, plus those a person took it from
            given = row.errors - row.taught_errors + row.corrected_away
            row.precision = (given - row.corrected_away) / given if given > 0 else 0.0

    def init(self):
        self.env["ipai.ops"].create_ops_view(
            self._table, select_sql=_CODE_SQL, columns=_CODE_COLUMNS, source="ops.classification_examples"
        )
