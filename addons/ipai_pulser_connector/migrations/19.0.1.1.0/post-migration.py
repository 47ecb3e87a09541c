"""19.0.1.1.0: per-client scopes and rate limits.

A new client may submit no intent type until its scope names some, and makes at most
``DEFAULT_RATE_LIMIT_PER_MINUTE`` requests a minute. The clients that exist before this
upgrade relied on neither: they keep what they had, written out where an operator sees it
(``*``: every type; 0: no limit) and can narrow it. Without this step the upgrade would
give them the new client's defaults and lock them out (403 on every submission).
"""


def migrate(cr, version):
    if not version:  # a fresh install has no client to keep working
        return
    cr.execute(
        """
        UPDATE ipai_pulser_client
           SET allowed_intent_types = '*', rate_limit_per_minute = 0
         WHERE allowed_intent_types IS NULL OR allowed_intent_types = ''
        """
    )
