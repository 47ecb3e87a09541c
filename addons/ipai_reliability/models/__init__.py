# Order matters: ipai.agent.error's SQL view joins the failure-mode and assignment tables,
# and Odoo creates each model's table then calls its init() in this order.
from . import ipai_ops
from . import ipai_failure_mode_signature
from . import ipai_failure_mode_example
from . import ipai_failure_mode
from . import ipai_agent_error_assignment
from . import ipai_reliability_team
from . import ipai_agent_error
from . import ipai_agent_error_chatter
from . import ipai_agent_error_occurrence
from . import ipai_agent_error_detail
from . import ipai_resolution
from . import ipai_benchmark_result
from . import ipai_agent_run

# before the usage view, which joins its table
from . import ipai_model_price
from . import ipai_agent_usage
from . import res_config_settings
from . import ipai_benchmark_comparison
from . import ipai_classification_quality
from . import ipai_provider_health
from . import ipai_webhook_secret_mixin
from . import ipai_alert_rule
from . import ipai_delivery_queue_mixin
from . import ipai_alert_delivery
from . import ipai_ops_summary
from . import ipai_agent_error_escalation
