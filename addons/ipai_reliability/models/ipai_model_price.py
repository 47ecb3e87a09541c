"""Prices of GenAI models, so token counts of agent runs become a cost per provider and model.

Agent runs record tokens per model (``metadata.tokens_by_model``, docs/agent_runs.md), never
a price: prices change and differ per contract, so a manager keeps them here. A run's model
takes the price (and the provider) of the longest entry its name starts with: ``gpt-4.1``
prices ``gpt-4.1-2025-04-14`` unless ``gpt-4.1-mini`` is a closer entry.
"""

from odoo import fields, models


class IpaiModelPrice(models.Model):
    _name = "ipai.model.price"
    _description = "GenAI model price per million tokens"
    _order = "provider, model"
    _rec_name = "model"

    provider = fields.Char(required=True, help="e.g. openai, anthropic, azure.ai.openai (gen_ai.provider.name)")
    model = fields.Char(
        required=True,
        help="The model name, or the start of it: prices every model whose name starts with it "
        "(the longest matching entry wins).",
    )
    input_price = fields.Float(
        string="Input (USD / 1M tokens)", digits=(16, 4), required=True, default=0.0, aggregator=False
    )
    output_price = fields.Float(
        string="Output (USD / 1M tokens)", digits=(16, 4), required=True, default=0.0, aggregator=False
    )
    active = fields.Boolean(default=True)

    _model_uniq = models.Constraint("UNIQUE(model)", "A model has one price.")
    _prices_positive = models.Constraint("CHECK(input_price >= 0 AND output_price >= 0)", "Prices cannot be negative.")
