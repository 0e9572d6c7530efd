"""The clue gate's word lists (hunt/gate_data/lexicon.json): data, checked when loaded."""

from __future__ import annotations

import json

import pytest

from hunt.lexicon import LEXICON_FILE, LexiconError, load_lexicon, parse_lexicon


def shipped() -> dict:
    return json.loads(LEXICON_FILE.read_text())


def test_the_shipped_lexicon_loads():
    lexicon = load_lexicon()
    assert lexicon.slang["wat"] == "what"
    assert len(lexicon.contrast_index()["red"]) == 1  # one colour among the colours


def test_a_word_in_two_opposite_groups_is_refused():
    data = shipped()
    data["contrasts"].append([["hot", "warm"], ["cold", "warm"]])
    with pytest.raises(LexiconError, match="'warm' is in opposite groups 0 and 1"):
        parse_lexicon(data)


def test_a_word_in_two_contrast_sets_is_fine():
    """'day' contrasts with 'night' and, elsewhere, with 'week': two sets, no conflict."""
    data = shipped()
    data["contrasts"].append([["day"], ["week"]])
    parse_lexicon(data)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("vocatives"), "lists missing: \\['vocatives'\\]"),
        (lambda d: d.update(synonyms=["x"]), "unknown: \\['synonyms'\\]"),
        (lambda d: d["vocatives"].append("Captain"), "vocatives: 'Captain' must be lower case"),
        (lambda d: d.update(slang=["u"]), "slang: must map words to words"),
        (lambda d: d["contrasts"].append([["alone"]]), "needs two groups or more"),
    ],
)
def test_a_malformed_lexicon_is_refused_with_the_list_named(change, message):
    data = shipped()
    change(data)
    with pytest.raises(LexiconError, match=message):
        parse_lexicon(data)
