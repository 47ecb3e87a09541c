from . import ipai_pulser_intent_requeue
