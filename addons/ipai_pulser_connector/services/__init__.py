# Framework-light building blocks of the connector. Modules here import nothing
# from odoo.models so they stay testable in isolation; the ORM glue lives in models/.
