"""Reports over exported intents (``ipai-ops report ...``)."""
