from . import ipai_agent_error_wizard, ipai_failure_mode_propose
