"""What happens when intents reach a final state: their clients' completion webhooks are
queued (``ipai.pulser.webhook.delivery``), in the transaction that writes the final state.

Called by ``IpaiPulserIntent._transition`` for every move into a final state, whoever
makes it: an attempt's outcome (:mod:`.attempt`), the reaper's dead letter (:mod:`.reaper`),
an acknowledged cancel (:mod:`.cancel`) or a queued intent cancelled by the API or the UI.
Only a row is inserted here; the HTTP call is the delivery cron's.
"""

from ..services import state_machine as sm


def on_final_state(intents, new_state):
    """Queue the completion webhooks of ``intents``, which just moved to ``new_state``."""
    if new_state not in sm.TERMINAL:
        return None
    return intents.env["ipai.pulser.webhook.delivery"]._enqueue(intents.filtered("client_id"))
