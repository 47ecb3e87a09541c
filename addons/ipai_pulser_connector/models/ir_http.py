import werkzeug.exceptions
from odoo import models


class IrHttp(models.AbstractModel):
    _inherit = "ir.http"

    @classmethod
    def _pre_dispatch(cls, rule, args):
        # Before Odoo's dispatcher reads form parameters from the body: werkzeug buffers a
        # form body without a length (chunked) whole, past the API's 1 MiB limit.
        if rule.endpoint.routing.get("ipai_pulser_api"):
            refusal = rule.endpoint.func.__self__._refuse_form_body()
            if refusal is not None:
                werkzeug.exceptions.abort(refusal)
        return super()._pre_dispatch(rule, args)
