"""French asks read in English (hunt/french.py): a message that reads as French is glossed
word for word before the English-only gate reads it, as are an organizer's French phrasings;
an English message is read as typed; the playground shows what the gate read."""

from __future__ import annotations

import pytest
from django.urls import reverse

from hunt import matcher
from hunt.crossencoder import data_hash, training_pairs
from hunt.french import GLOSSARY_FILE, glossary, read_in_english
from hunt.gate_eval import measure_dialogues
from hunt.leaks import normalize_message
from hunt.models import Clue
from hunt.questions import asks_yes_or_no, gate_text, question_kinds

LAMP = matcher.ClueSpec(1, ("What keeps the lighthouse lamp burning at night?",), ("lamp",))
BRIDGE = matcher.ClueSpec(2, ("Who built the old stone bridge?",), ("bridge",))
FRENCH_ASK = "Qu'est-ce que tu brûles dans la lampe du phare la nuit ?"


def test_a_french_question_is_glossed_into_english():
    assert read_in_english(FRENCH_ASK) == "what you burn in the lamp of the lighthouse at night ?"


def test_left_out_accents_and_apostrophes_read_the_same():
    typed = "qu est ce que tu brules dans la lampe du phare la nuit ?"
    assert read_in_english(typed) == read_in_english(FRENCH_ASK)


@pytest.mark.parametrize(
    "text",
    [
        "What keeps your lamp going at night?",
        "Bonjour Marta, what keeps your lamp going at night?",  # one French word is not French
        "Le phare",  # nor is a name
    ],
)
def test_an_english_message_is_read_as_typed(text):
    assert read_in_english(text) == text


def test_a_french_yes_no_question_reads_as_one():
    text = gate_text("Est-ce que tu as un chat ?")
    assert text.startswith("do you have")
    assert asks_yes_or_no(text, question_kinds(text))


def test_inversions_and_elisions_are_split_unless_the_word_is_whole():
    words = glossary()
    assert words.split("as-tu l'heure aujourd'hui") == ["as", "tu", "l'", "heure", "aujourd'hui"]


def test_a_french_ask_opens_its_clue_which_it_did_not_unglossed(monkeypatch):
    assert matcher.match(FRENCH_ASK, [LAMP, BRIDGE]).opened == LAMP.key
    monkeypatch.setattr("hunt.questions.read_in_english", lambda text: text)
    assert matcher.match(FRENCH_ASK, [LAMP, BRIDGE]).opened is None


def test_a_french_near_miss_opens_nothing():
    assert matcher.match("Qui a construit la lampe du phare ?", [LAMP, BRIDGE]).opened is None


def test_an_organizers_french_example_is_an_anchor_read_in_english(monkeypatch):
    example = "Tu mets quoi dans ta lampe pour qu'elle brûle toute la nuit ?"
    spec = matcher.ClueSpec(3, (example,), ("lamp",))
    english = "What do you put in your lamp so it burns all night?"
    assert matcher.match(english, [spec]).opened == 3
    # Read as typed, the example is French to an English-only encoder.
    monkeypatch.setattr(matcher, "gate_text", normalize_message)
    assert matcher.match(english, [spec]).opened is None


@pytest.mark.django_db
def test_the_playground_shows_what_the_gate_read(client, demo_hunt, make_user):
    clue = Clue.objects.get(avatar__slug="old-marta")
    client.force_login(make_user("boss", is_staff=True, is_superuser=True))
    url = reverse("admin:avatars_avatar_clue_gate", args=[clue.avatar_id, clue.pk])

    french = client.get(url, {"message": FRENCH_ASK})
    assert french.context["trial"].read_as == read_in_english(FRENCH_ASK)
    assert "glossed into English" in french.content.decode()

    english = client.get(url, {"message": "What keeps your lamp going at night?"})
    assert english.context["trial"].read_as == ""
    assert "glossed into English" not in english.content.decode()


def test_the_verifier_learns_french_phrasings_as_the_gate_reads_them(tmp_path, monkeypatch):
    phrasing = "Bonjour ! vous utilisez le lait de quel animal pour votre fromage"
    sentences = {sentence for sentence, _anchor, _label in training_pairs(["train_f.json"])}
    assert gate_text(phrasing) in sentences
    assert normalize_message(phrasing) not in sentences

    # So a trained verifier is out of date when the glossary changes.
    before = data_hash()
    changed = tmp_path / "fr_en.json"
    changed.write_text(GLOSSARY_FILE.read_text().replace('"phare": "lighthouse"', '"phare": "x"'))
    monkeypatch.setattr("hunt.crossencoder.GLOSSARY_FILE", changed)
    assert data_hash() != before


def test_bench_gate_counts_the_french_messages_apart():
    clue = {"id": "lamp", "questions": list(LAMP.questions), "keywords": list(LAMP.keywords)}
    data = {
        "hunt": {"avatars": [{"name": "Old Marta", "clues": [clue]}]},
        "items": [
            {
                "id": "lamp",
                "asks": [
                    {"first": FRENCH_ASK, "second": "et la nuit ?"},
                    {"first": "What keeps the lighthouse lamp burning at night?", "second": "?"},
                ],
                "near_misses": [{"text": "Qui a construit la lampe du phare ?"}],
            }
        ],
    }
    run = measure_dialogues(data, calibrated=False)
    assert (run.first.opened, run.first.positives, run.near.negatives) == (2, 2, 1)
    french = run.french
    assert (french.first.opened, french.first.positives) == (1, 1)
    assert (french.within_two.opened, french.near.negatives, french.near.false_unlocks) == (1, 1, 0)
