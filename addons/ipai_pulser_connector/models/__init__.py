from . import ipai_pulser_client
from . import ipai_pulser_client_rate
from . import ipai_pulser_intent
from . import ipai_pulser_intent_event
from . import ipai_pulser_intent_lease
from . import ipai_pulser_request_nonce
from . import ipai_pulser_webhook_delivery
from . import ir_http
