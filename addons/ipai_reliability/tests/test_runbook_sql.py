"""Every SQL block in the runbooks and specs runs against a real Odoo + ops database.

People paste these at 3 a.m.: a column that was renamed (or never existed) must fail
here, not there. Each statement is EXPLAINed (planned, so every table, column and
function must exist) inside a savepoint. Placeholders are the docs' own conventions:
``<value>`` unquoted becomes NULL, ``'<value>'`` stays a string, psycopg2-style
``%(name)s`` becomes NULL. A block whose first line is ``-- on: <system>`` targets
another system's database (e.g. Supabase Vault) and is skipped.
"""

import re

from odoo.tests import TransactionCase, tagged

from ipai_ops import config

_BLOCK = re.compile(r"^[ \t]*```sql\n(.*?)^[ \t]*```", re.S | re.M)
_PLACEHOLDER = re.compile(r"(?<!')<[^<>'\n]+>(?!')")
_PARAM = re.compile(r"%\(\w+\)s")
_TARGET = re.compile(r"\s*-- on: (\w+)")
_PLANNABLE = re.compile(r"^\s*(select|with|update|delete|insert)\b", re.I)


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


@tagged("post_install", "-at_install")
class TestRunbookSql(TransactionCase):
    def test_documented_sql_is_valid_against_the_real_schema(self):
        statements = list(sql_statements())
        self.assertGreater(len(statements), 40)
        problems = []
        for where, statement in statements:
            runnable = _PARAM.sub("NULL", _PLACEHOLDER.sub("NULL", statement))
            try:
                with self.env.cr.savepoint():
                    self.env.cr.execute("EXPLAIN " + runnable)
            except Exception as exc:  # every failure is collected and reported below
                problems.append(f"{where}: {str(exc).splitlines()[0]}\n    {statement.splitlines()[0]}")
        self.assertEqual(problems, [], "\n".join(problems))
