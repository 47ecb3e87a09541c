from . import (
    ipai_agent_error_merge,
    ipai_agent_error_teach,
    ipai_agent_error_wizard,
    ipai_failure_mode_propose,
    ipai_failure_mode_suggest,
)
