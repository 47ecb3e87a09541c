"""Suggest a signature from taught examples (invented texts: unit tests)."""

from __future__ import annotations

import pytest

from ipai_ops.classify.suggest import SuggestError, suggest_signature
from ipai_ops.registry import compile_pattern

SPOOL = [
    "zorblax spool 1 tipped over on shard kappa; sweeper gave up after 3 passes",
    "zorblax spool 22 tipped over on shard lambda; sweeper gave up after 66 passes",
    "zorblax spool 3 tipped over on shard sigma; sweeper gave up after 9 passes",
]


def test_the_pattern_keeps_what_the_examples_share_and_skips_what_varies():
    found = suggest_signature(SPOOL, ["nightly export 4 finished", "zorblax spool 2 is fine"])
    regex = compile_pattern(found.pattern)  # RE2: linear time on sender text
    assert all(regex.search(text) for text in SPOOL)
    assert regex.search("zorblax spool 907 tipped over on shard omega; sweeper gave up after 1 passes")
    assert not regex.search("zorblax spool 2 is fine")
    assert "kappa" not in found.pattern and "22" not in found.pattern
    assert (found.examples, found.others_checked) == (3, 2)


def test_a_shared_quoted_name_stays_literal_and_ids_do_not():
    texts = ["KeyError: 'ZORB_TOKEN' in /srv/app/x.py line 4", "KeyError: 'ZORB_TOKEN' in /srv/app/y.py line 9"]
    found = suggest_signature(texts, ["KeyError: 'OTHER' in /srv/app/x.py line 4"])
    assert "ZORB_TOKEN" in found.pattern
    one = suggest_signature(["order a1b2c3d4e5 missing from ledger 12"], [])
    assert "a1b2c3d4e5" not in one.pattern and compile_pattern(one.pattern).search(
        "order zz9zz9zz9 missing from ledger 3"
    )


def test_no_suggestion_when_it_would_match_other_labelled_texts_or_nothing_is_shared():
    with pytest.raises(SuggestError, match="also matches 1 other labelled text"):
        suggest_signature(SPOOL, ["zorblax spool 5 tipped over on shard x; sweeper gave up after 2 passes (old)"])
    with pytest.raises(SuggestError, match="no literal text"):
        suggest_signature(["abc 1", "xyz 2"], [])
    with pytest.raises(SuggestError, match="no example text"):
        suggest_signature(["", "  "], [])
