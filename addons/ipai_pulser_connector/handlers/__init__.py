from . import odoo_builtin
