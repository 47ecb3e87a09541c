"""The intent worker, apart from the model (as OCA queue_job keeps ``Job`` apart from
``queue.job``): claims and leases (:mod:`.lease`), the reaper (:mod:`.reaper`), one attempt
(:mod:`.attempt`), cooperative cancellation (:mod:`.cancel`), the loop (:mod:`.runner`) and
what a final state sets off (:mod:`.completion`: completion webhooks).

The model (``models/ipai_pulser_intent.py``) keeps the fields, constraints, state machine
and actions. Dependencies point one way: models import the worker; nothing here imports
``models`` (the worker reaches the model through the recordset it is given), so neither
side imports the other at load time.
"""

from . import attempt, cancel, completion, lease, reaper, runner
from .attempt import Attempt
from .lease import claim, claim_committed
from .reaper import reap_committed, reap_expired_leases
from .runner import run_worker

__all__ = [
    "Attempt",
    "attempt",
    "cancel",
    "claim",
    "claim_committed",
    "completion",
    "lease",
    "reap_committed",
    "reap_expired_leases",
    "reaper",
    "run_worker",
    "runner",
]
