"""import_hunt / export_hunt: every validation class of the hunt-file contract, atomicity,
re-import in place, and the export round trip."""

from __future__ import annotations

import copy
import json
import os
import stat

import pytest
from django.contrib.auth.hashers import check_password
from django.core.management import CommandError, call_command
from mnemonic import Mnemonic

from avatars.hunt_files import (
    HuntFileError,
    export_hunt_document,
    import_hunt_document,
    validate_hunt_document,
)
from avatars.models import Avatar
from hunt.models import Clue, Discovery, Hunt, SeedWord
from tests.conftest import DEMO_HUNT

pytestmark = pytest.mark.django_db

# A valid phrase with a checksum, for files that hold all 24 words.
FULL_PHRASE = Mnemonic("english").to_mnemonic(bytes(range(32))).split()


def demo_doc() -> dict:
    return json.loads(DEMO_HUNT.read_text())


def full_doc() -> dict:
    """A hunt with all 24 words on this server, each guarded by one clue of one avatar."""
    return {
        "format": "lostwallet.hunt/1",
        "slug": "full-hunt",
        "title": "Full hunt",
        "description": "Every position is guarded here.",
        "starts_at": "2026-01-01T00:00:00Z",
        "ends_at": "2030-01-01T00:00:00Z",
        "words": [
            {"position": i + 1, "word": w, "world": "Here", "hint": f"Slot {i + 1}."}
            for i, w in enumerate(FULL_PHRASE)
        ],
        "avatars": [
            {
                "slug": "keeper",
                "name": "Keeper",
                "persona": "You are the Keeper, calm and brief.",
                "greeting": "Hello.",
                "clues": [
                    {"position": i, "questions": [f"What is hidden in vault number {i}?"]}
                    for i in range(1, 25)
                ],
            }
        ],
    }


def problems_of(doc) -> list[str]:
    return validate_hunt_document(doc)


def assert_refused(doc, *needles: str) -> None:
    """The import fails, every needle is in some problem line, and nothing was written."""
    before = (Hunt.objects.count(), Avatar.objects.count(), SeedWord.objects.count())
    with pytest.raises(HuntFileError) as info:
        import_hunt_document(doc)
    text = "\n".join(info.value.problems)
    for needle in needles:
        assert needle in text, f"{needle!r} not in:\n{text}"
    assert (Hunt.objects.count(), Avatar.objects.count(), SeedWord.objects.count()) == before


def test_the_demo_hunt_is_valid_and_imports():
    assert problems_of(demo_doc()) == []
    hunt = import_hunt_document(demo_doc())
    assert hunt.words.count() == 24
    assert sum(w.has_word for w in hunt.words.all()) == 6
    assert hunt.avatars.count() == 5
    quill = Clue.objects.get(avatar__slug="professor-quill", word__position=15)
    assert quill.requires == [12]


def test_a_full_file_gets_its_phrase_hash_computed():
    hunt = import_hunt_document(full_doc())
    assert check_password(" ".join(FULL_PHRASE), hunt.phrase_hash)
    assert hunt.guarded_words()[1] == FULL_PHRASE[0]


def test_an_unknown_format_is_refused():
    doc = demo_doc()
    doc["format"] = "lostwallet.hunt/2"
    assert_refused(doc, "$.format: unknown format")


def test_a_missing_position_is_refused():
    doc = demo_doc()
    doc["words"] = [w for w in doc["words"] if w["position"] != 5]
    assert_refused(doc, "$.words: must hold exactly 24 entries", "position 5 is missing")


def test_a_duplicate_position_is_refused():
    doc = demo_doc()
    doc["words"][4]["position"] = 4
    assert_refused(doc, "$.words[4].position: position 4 appears twice", "position 5 is missing")


def test_a_word_outside_the_bip39_list_is_refused():
    doc = demo_doc()
    doc["words"][2]["word"] = "blockchainz"
    assert_refused(doc, "$.words[2].word: is not a word of the BIP39 English list")


def test_a_bad_checksum_is_refused_when_all_words_are_present():
    doc = full_doc()
    doc["words"][23]["word"], doc["words"][22]["word"] = (
        doc["words"][22]["word"],
        doc["words"][23]["word"],
    )
    assert_refused(doc, "$.words: the 24 words fail the BIP39 checksum")


def test_a_phrase_hash_that_does_not_match_the_words_is_refused():
    doc = full_doc()
    doc["phrase_hash"] = demo_doc()["phrase_hash"]
    assert_refused(doc, "$.phrase_hash: does not match the 24 words")


def test_a_partial_file_needs_a_phrase_hash():
    doc = demo_doc()
    del doc["phrase_hash"]
    assert_refused(doc, "$.phrase_hash: is required when some words are hidden elsewhere")


def test_a_clue_for_a_position_without_word_is_refused():
    doc = demo_doc()
    doc["avatars"][0]["clues"][0]["position"] = 1  # hidden elsewhere
    assert_refused(
        doc,
        "$.avatars[0].clues[0].position: position 1 has no word on this server",
        "$.words[3]: the word at position 3 is guarded by no clue",
    )


def test_a_word_guarded_by_no_clue_is_refused():
    doc = demo_doc()
    doc["avatars"][1]["clues"] = []
    assert_refused(doc, "$.words[7]: the word at position 7 is guarded by no clue")


def test_duplicate_avatar_slugs_are_refused():
    doc = demo_doc()
    doc["avatars"][1]["slug"] = "old-marta"
    assert_refused(doc, "$.avatars[1].slug: duplicate avatar slug 'old-marta'")


def test_a_requires_cycle_is_refused():
    doc = demo_doc()
    doc["avatars"][0]["clues"][0]["requires"] = [15]  # 3 needs 15, 15 needs 12, 12 needs 3
    assert_refused(doc, "the `requires` of position 3 form a cycle")


@pytest.mark.parametrize(
    ("where", "path"),
    [
        (lambda d, w: d.update(description=f"Bring a {w} along."), "$.description"),
        (lambda d, w: d["avatars"][0].update(persona=f"You love {w.upper()}."), "].persona"),
        (lambda d, w: d["avatars"][0].update(greeting=f"Ahoy, {w}!"), "].greeting"),
        (lambda d, w: d["avatars"][0].update(examples=f"Me: {w}, they say."), "].examples"),
        (lambda d, w: d["avatars"][0]["clues"][0]["hints"].append(f"think {w}"), "].hints[1]"),
        (lambda d, w: d["avatars"][0]["clues"][0]["questions"].append(f"is it {w}?"), "ons[2]"),
        (lambda d, w: d["avatars"][0]["clues"][0]["keywords"].append(w), "].keywords[6]"),
        (lambda d, w: d["avatars"][0]["checks"][0].update(question=f"{w}?"), "checks[0].question"),
    ],
    ids=[
        "description",
        "persona",
        "greeting",
        "examples",
        "hints",
        "questions",
        "keywords",
        "checks",
    ],
)
def test_a_guarded_word_in_public_text_is_refused(where, path):
    doc = demo_doc()
    word = next(w["word"] for w in doc["words"] if w["position"] == 7)
    where(doc, word)
    assert_refused(doc, path, "contains the guarded word of position 7")


def test_a_plural_gives_a_word_away_but_a_longer_word_does_not():
    doc = demo_doc()
    word = next(w["word"] for w in doc["words"] if w["position"] == 7)
    doc["avatars"][0]["greeting"] += f" Mind the {word}s!"
    assert any("greeting" in p for p in problems_of(doc))
    doc["avatars"][0]["greeting"] = f"Say x{word}y."
    assert not any("greeting" in p for p in problems_of(doc))


def test_a_persona_too_long_for_the_prompt_budget_is_refused():
    doc = demo_doc()
    doc["avatars"][2]["persona"] = "You are a very talkative scholar of old maps. " * 120
    assert_refused(doc, "$.avatars[2].persona: The persona is too long")


def test_every_problem_of_a_broken_file_is_reported_at_once():
    doc = demo_doc()
    doc["words"][2]["word"] = "notaword"
    doc["avatars"][1]["slug"] = "old-marta"
    doc["ends_at"] = doc["starts_at"]
    problems = problems_of(doc)
    assert len(problems) >= 3
    assert all(p.startswith("$") for p in problems)


def test_import_command_exits_non_zero_with_a_message_per_problem(tmp_path, capsys):
    doc = demo_doc()
    doc["avatars"][1]["slug"] = "old-marta"
    doc["words"][2]["word"] = "notaword"
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(CommandError, match=r"refused .*nothing was written"):
        call_command("import_hunt", str(path))
    err = capsys.readouterr().err
    assert "$.avatars[1].slug" in err
    assert "$.words[2].word" in err
    assert not Hunt.objects.exists()


def test_import_command_reports_invalid_json(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"format": ')
    with pytest.raises(CommandError):
        call_command("import_hunt", str(path))


def test_reimport_updates_in_place_and_keeps_progress(make_player):
    hunt = import_hunt_document(demo_doc())
    player = make_player()
    seed = hunt.words.get(position=3)
    Discovery.objects.create(player=player, word=seed, first=True)
    conversation_avatar = Avatar.objects.get(slug="old-marta")

    doc = demo_doc()
    doc["title"] = "The Lost Wallet, season two"
    doc["avatars"][0]["greeting"] = "Ahoy again."
    again = import_hunt_document(doc)

    assert again.pk == hunt.pk
    assert again.title == "The Lost Wallet, season two"
    assert Avatar.objects.get(slug="old-marta").pk == conversation_avatar.pk
    assert Discovery.objects.filter(player=player, word=seed).exists()


def test_changing_a_discovered_word_is_refused_and_nothing_changes(make_player):
    hunt = import_hunt_document(demo_doc())
    seed = hunt.words.get(position=3)
    Discovery.objects.create(player=make_player(), word=seed, first=True)
    doc = demo_doc()
    doc["title"] = "Changed title"
    doc["words"][2]["word"] = "zebra"
    with pytest.raises(HuntFileError) as info:
        import_hunt_document(doc)
    assert "position 3 was already discovered" in str(info.value)
    hunt.refresh_from_db()
    assert hunt.title == "The Lost Wallet"
    assert hunt.words.get(position=3).reveal_word() != "zebra"


def test_changing_an_undiscovered_word_is_allowed():
    hunt = import_hunt_document(demo_doc())
    doc = demo_doc()
    doc["words"][2]["word"] = "zebra"
    import_hunt_document(doc)
    assert hunt.words.get(position=3).reveal_word() == "zebra"


def test_avatars_dropped_from_the_file_are_closed_not_deleted():
    import_hunt_document(demo_doc())
    doc = demo_doc()
    nia = doc["avatars"].pop(3)
    for entry in doc["words"]:
        if entry["position"] == nia["clues"][0]["position"]:
            entry.pop("word")
    import_hunt_document(doc)
    assert Avatar.objects.get(slug="nia-neon").published is False


def test_many_example_dialogues_are_accepted_and_only_those_that_fit_are_prompted():
    doc = demo_doc()
    doc["avatars"][2]["examples"] = "<START>\nVisitor: Any maps today?\nMe: Always. " * 60
    assert not problems_of(doc)


def test_persona_checks_travel_in_the_file():
    doc = demo_doc()
    hunt = import_hunt_document(doc)
    marta = Avatar.objects.get(slug="old-marta")
    checks = list(marta.persona_checks.all())
    written = next(a for a in doc["avatars"] if a["slug"] == "old-marta")["checks"]
    assert [c.question for c in checks] == [c["question"] for c in written]
    assert checks[0].requirements() == [
        [alt.lower() for alt in line.split("|")] for line in written[0]["must_contain"]
    ]
    exported = next(a for a in export_hunt_document(hunt)["avatars"] if a["slug"] == "old-marta")
    assert exported["checks"] == written


def test_a_malformed_persona_check_is_refused():
    doc = demo_doc()
    doc["avatars"][0]["checks"] = [{"question": "", "must_contain": "barnacle"}, "cat?"]
    problems = problems_of(doc)
    assert "$.avatars[0].checks[0].question: must be a non-empty string" in problems
    assert "$.avatars[0].checks[0].must_contain: must be a list of non-empty strings" in problems
    assert "$.avatars[0].checks[1]: must be an object" in problems


def test_an_avatars_example_dialogues_travel_in_the_file():
    doc = demo_doc()
    doc["avatars"][0]["examples"] = "<START>\n{{user}}: Storm tonight?\n{{char}}: Always is."
    hunt = import_hunt_document(doc)
    avatar = Avatar.objects.get(slug=doc["avatars"][0]["slug"])
    assert avatar.examples == doc["avatars"][0]["examples"]
    exported = next(a for a in export_hunt_document(hunt)["avatars"] if a["slug"] == avatar.slug)
    assert exported["examples"] == avatar.examples


def test_export_then_import_round_trips(tmp_path):
    hunt = import_hunt_document(demo_doc())
    exported = export_hunt_document(hunt)
    path = tmp_path / "export.json"
    call_command("export_hunt", hunt.slug, output=str(path))
    assert json.loads(path.read_text()) == exported

    again = import_hunt_document(copy.deepcopy(exported))
    assert again.pk == hunt.pk
    assert export_hunt_document(again) == exported
    original = demo_doc()
    assert {w["position"]: w.get("word") for w in exported["words"]} == {
        w["position"]: w.get("word") for w in original["words"]
    }


@pytest.mark.parametrize("existing", [False, True])
def test_an_exported_file_is_readable_by_its_owner_only(tmp_path, existing):
    hunt = import_hunt_document(demo_doc())
    path = tmp_path / "export.json"
    if existing:
        path.write_text("an older export")
        path.chmod(0o644)
    umask = os.umask(0o022)  # the usual umask, which leaves new files world-readable
    try:
        call_command("export_hunt", hunt.slug, output=str(path))
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == export_hunt_document(hunt)


def test_an_exported_file_imports_into_an_empty_database(tmp_path):
    hunt = import_hunt_document(demo_doc())
    exported = export_hunt_document(hunt)
    Hunt.objects.all().delete()
    Avatar.objects.all().delete()
    again = import_hunt_document(exported)
    assert export_hunt_document(again) == exported


def test_an_avatar_slug_of_another_hunt_is_refused():
    import_hunt_document(demo_doc())
    doc = full_doc()
    doc["avatars"][0]["slug"] = "old-marta"
    assert_refused(doc, "avatar slug 'old-marta' is taken by another hunt's avatar")


def test_entries_that_are_not_objects_are_reported_by_path():
    doc = demo_doc()
    doc["words"][0] = "olive"
    doc["avatars"][1] = []
    doc["avatars"][0]["clues"].append(7)
    problems = problems_of(doc)
    assert "$.words[0]: must be an object" in problems
    assert "$.avatars[1]: must be an object" in problems
    assert "$.avatars[0].clues[1]: must be an object" in problems
