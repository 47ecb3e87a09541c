"""The "For business users" block that opens every runbook in Odoo.

Generated from the failure mode's registry fields (family, description, retry policy,
severity, owner) rather than written into the 89 runbook files: the family text below is
true of every code in the family, and the rest is the code's own data, so the block can
never disagree with the registry.
"""

from markupsafe import Markup, escape

#: What a failure of each family means to someone who does not read stack traces.
FAMILY_TEXT = {
    "test": "An automated test failed: the change being checked does not do what its tests expect. "
    "The failure itself affects nothing running; the change waits until a developer fixes the code or the test.",
    "compile": "The software did not build (a compile or type error). The change cannot ship until a developer "
    "fixes it; what is already running is not affected.",
    "lint": "A style or static-analysis check failed. The change waits until it is tidied; "
    "nothing running is affected.",
    "dependency": "A library or package the software needs could not be installed, or is the wrong version. "
    "Builds or deployments stop until a developer pins or updates it.",
    "network": "A connection to another system failed (refused, reset, or its name could not be found). "
    "Often temporary; if it keeps happening, that system or the network in between is down.",
    "timeout": "Something took longer than allowed and was stopped. Load or a slow system it waits on is the "
    "usual cause; it often succeeds once the load passes.",
    "resource": "The system ran out of something it needs: memory, disk space, a quota or a rate limit. "
    "Work slows down or stops until capacity is freed or raised.",
    "permission": "The software was refused access to a file, record or action. Someone with the right access "
    "must grant it or correct the setup; trying again alone does not help.",
    "config": "A setting is missing or wrong. Whoever administers the system must correct it; "
    "trying again alone does not help.",
    "infrastructure": "A server, container, database or build machine the work depends on failed. "
    "This is usually for the operations team rather than a code change.",
    "auth": "Credentials were rejected: an expired or revoked key or token, or a wrong signature. "
    "Someone must renew or correct them; trying again alone does not help.",
    "data": "The data received or stored was not what the software expects (wrong format, missing or "
    "conflicting values). The record concerned needs correcting, then the work can be redone.",
    "provider": "An outside AI or API provider answered with an error (overloaded, rate-limited, or it refused "
    "the request). Often temporary; retries and fallbacks usually get through.",
    "runtime": "The program itself failed while running (an unexpected error in the code). A developer needs "
    "to look at it; trying again usually gives the same result.",
    "unknown": "No known failure pattern matches this error yet. Someone needs to read it and give it a code "
    "(Create failure mode from this error).",
}

SEVERITY_TEXT = {
    "critical": "Critical: handle first; the console lists it before every other severity.",
    "high": "High: handle before Medium and Low errors.",
    "medium": "Medium: plan a fix; Critical and High errors come first.",
    "low": "Low: fix when convenient.",
}


def business_summary_html(mode):
    """The block as HTML (escaped: every value comes from the registry or a person)."""
    if mode.retryable:
        attempts = (
            f"up to {mode.max_attempts} attempts in all" if mode.max_attempts else "as often as the retry policy allows"
        )
        retry = f"Often: the system tries again by itself ({attempts}). If it still fails, a person has to act."
    else:
        retry = "No: trying again gives the same result, so a person has to act."
    rows = [
        ("What happened", mode.description or mode.name or ""),
        ("What kind of failure", FAMILY_TEXT.get(mode.family or "", "")),
        ("Does it fix itself?", retry),
        ("How urgent", SEVERITY_TEXT.get(mode.severity or "", "")),
        ("Who acts", mode.owner or "The team on call for the Reliability app (no owner team is set for this code)."),
    ]
    items = Markup("").join(Markup("<li><strong>%s:</strong> %s</li>") % (label, text) for label, text in rows if text)
    return (
        Markup(
            '<section class="o_ipai_business_summary alert alert-info" role="note">'
            "<h2>For business users</h2><ul>%s</ul>"
            '<p class="mb-0 small">The steps below are for the engineer who fixes it.</p></section>'
        )
        % items
        if items
        else escape("")
    )
