"""Every SQL block in the runbooks and specs runs against a real Odoo + ops database.

People paste these at 3 a.m.: a column that was renamed (or never existed) must fail
here, not there. Each statement is EXPLAINed (planned, so every table, column and
function must exist) inside a savepoint. Placeholders are the docs' own conventions:
``<value>`` unquoted becomes NULL, ``'<value>'`` stays a string, psycopg2-style
``%(name)s`` becomes NULL. A block whose first line is ``-- on: <system>`` targets
another system's database (e.g. Supabase Vault) and is skipped.

The Reliability app stands alone: a statement over the Pulser connector's tables
(``ipai_pulser_*``) is checked only when ``ipai_pulser_connector`` is installed, by its own
test, which is skipped (with the reason) when it is not.
"""

import re

from odoo.tests import TransactionCase, tagged

from ipai_ops import config

_BLOCK = re.compile(r"^[ \t]*```sql\n(.*?)^[ \t]*```", re.S | re.M)
_PLACEHOLDER = re.compile(r"(?<!')<[^<>'\n]+>(?!')")
_PARAM = re.compile(r"%\(\w+\)s")
_TARGET = re.compile(r"\s*-- on: (\w+)")
_PLANNABLE = re.compile(r"^\s*(select|with|update|delete|insert)\b", re.I)
# A table of the connector addon (ipai_pulser_intent, ipai_pulser_intent_event, ...) or a
# view it publishes in the ops schema (ops.pulser_intents_v1, ...): not this addon's, so not
# in a database that has only ipai_reliability.
_CONNECTOR_TABLE = re.compile(r"\bipai_pulser_(?!connector\b)[a-z_]+\b|\bops\.pulser_[a-z_]+_v\d+\b")


def sql_statements():
    root = config.repo_root()
    files = sorted([*root.glob("docs/**/*.md"), root / "README.md", *root.glob("addons/*/readme/*.md")])
    for path in files:
        text = path.read_text(encoding="utf-8")
        for match in _BLOCK.finditer(text):
            block = match.group(1)
            target = _TARGET.match(block)
            if target and target.group(1).lower() not in ("odoo", "ops"):
                continue
            line = text[: match.start()].count("\n") + 2
            for chunk in re.split(r";\s*\n", block):
                statement = re.sub(r"^\s*--.*$", "", chunk, flags=re.M).strip().rstrip(";")
                if statement and _PLANNABLE.match(statement):
                    yield f"{path.relative_to(root)}:{line}", statement


def _explain_all(cr, statements):
    """Every statement EXPLAINed in a savepoint; one line per failure."""
    problems = []
    for where, statement in statements:
        runnable = _PARAM.sub("NULL", _PLACEHOLDER.sub("NULL", statement))
        try:
            with cr.savepoint():
                cr.execute("EXPLAIN " + runnable)
        except Exception as exc:  # every failure is collected and reported below
            problems.append(f"{where}: {str(exc).splitlines()[0]}\n    {statement.splitlines()[0]}")
    return problems


def needs_connector(statement):
    return _CONNECTOR_TABLE.search(statement) is not None


@tagged("post_install", "-at_install")
class TestRunbookSql(TransactionCase):
    def test_documented_sql_is_valid_against_the_real_schema(self):
        """Statements over the ops schema and this addon's tables: valid with or without the connector."""
        statements = [(where, st) for where, st in sql_statements() if not needs_connector(st)]
        self.assertGreater(len(statements), 40)
        problems = _explain_all(self.env.cr, statements)
        self.assertEqual(problems, [], "\n".join(problems))

    def test_documented_connector_sql_is_valid_when_the_connector_is_installed(self):
        statements = [(where, st) for where, st in sql_statements() if needs_connector(st)]
        self.assertTrue(statements, "no documented statement reads the connector's tables any more")
        connector = self.env["ir.module.module"].search([("name", "=", "ipai_pulser_connector")])
        if connector.state != "installed":
            self.skipTest(
                f"ipai_pulser_connector is not installed: {len(statements)} documented statement(s) over its "
                "ipai_pulser_* tables are checked where it is"
            )
        problems = _explain_all(self.env.cr, statements)
        self.assertEqual(problems, [], "\n".join(problems))
