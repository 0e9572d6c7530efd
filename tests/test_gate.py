"""The clue gate (hunt/gate.py; its matcher and checks, hunt/matcher.py): paraphrases of the
demo clues open them and near misses do not; stuffing, normalisation tricks, prerequisites, the
near-miss budget, hints, and the discovery it records (race-safe, `first` for one finder,
leaderboard told after commit); each check of the matcher, on and off."""

from __future__ import annotations

import json
from dataclasses import replace
from io import StringIO
from unittest import mock

import pytest
from django.core.management import call_command
from django.db.models.query import QuerySet
from django.utils import timezone

from avatars.models import Avatar, Conversation, Message
from avatars.turns import said_in, turn_parts
from hunt import encoder, gate, leaks, matcher, questions
from hunt.models import Clue, Discovery, Hunt, Player
from tests.hunt_helpers import discover, run_together

# Beyond the examples and counterexamples stored in the demo hunt file (checked below too):
# more ways players ask the right questions, and questions about the same things that are not.
PARAPHRASES = {
    "old-marta": [
        "What do you burn in the lighthouse lamp at night?",
        "marta, what fuels the lamp up top through the night?",
        "How is the lamp of the lighthouse kept burning all night?",
        "wat keeps the lighthouse lamp burnin at nite",
    ],
    "captain-rook": [
        "Which star do you follow when the compass fails?",
        "If your compass breaks, what star do you steer by?",
        "cadet here! which star guides your airship when the compass is broken?",
    ],
    "professor-quill": [
        "Which book will you never lend to anybody?",
        "What's the title of the book nobody may borrow from your library?",
        "Why do the clocks here run backwards?",
        "What makes the library clocks turn in reverse?",
    ],
    "nia-neon": [
        "What did you paint on the old train station wall?",
        "yo nia, what's your mural at the abandoned station about?",
    ],
    "sage-of-the-dome": [
        "Which flower opens only in the moonlight?",
        "What flower in the dome blooms only at night?",
    ],
}
NEAR_MISSES = {
    "old-marta": [
        "What colour is the lighthouse lamp?",
        "Who built the lighthouse?",
        "How old is the lamp?",
        "When do you light the lamp each evening?",
        "How far can ships see the light?",
    ],
    "captain-rook": [
        "Which star is the brightest tonight?",
        "Who gave you your compass?",
        "How do you fix a broken compass?",
        "How fast does your airship fly?",
    ],
    "professor-quill": [
        "How many books are in the library?",
        "Who wrote the book you never lend?",
        "Who built the clocks in your library?",
        "What time is it on the backwards clocks?",
    ],
    "nia-neon": [
        "When did you paint the old station wall?",
        "What colour paint do you use most?",
        "Why was the train station abandoned?",
    ],
    "sage-of-the-dome": [
        "How often do you water the flowers?",
        "What colour is the moon flower?",
        "Which flower opens only in the morning sun?",
    ],
}


def specs_of(avatar: Avatar) -> tuple[list[matcher.ClueSpec], frozenset[str]]:
    clues = [matcher.ClueSpec.of(c) for c in Clue.objects.filter(avatar=avatar)]
    return clues, questions.vocabulary_of(clues)


def opened_by(avatar: Avatar, text: str):
    clues, vocabulary = specs_of(avatar)
    return matcher.match(text, clues, vocabulary, names=frozenset(avatar.name.lower().split()))


def clue_at(hunt: Hunt, position: int) -> Clue:
    return Clue.objects.select_related("word", "avatar").get(
        word__hunt=hunt, word__position=position
    )


def say(player: Player, avatar: Avatar, text: str) -> Message:
    conversation, _ = Conversation.objects.get_or_create(player=player, avatar=avatar)
    return Message.objects.create(
        conversation=conversation, role=Message.Role.PLAYER, text=text, status="pending"
    )


# Matching -------------------------------------------------------------------------------------


def test_the_demo_clues_open_for_their_own_questions(demo_hunt):
    for clue in Clue.objects.filter(word__hunt=demo_hunt).select_related("avatar"):
        assert [opened_by(clue.avatar, q).opened for q in clue.questions] == [clue.pk] * len(
            clue.questions
        )


def test_paraphrases_of_the_demo_clues_open_them(demo_hunt):
    """Paraphrases never seen by the gate: the file's examples, each measured with the other
    examples only (leave-one-out, as eval_gate does), and the ones above. The matcher trades
    recall for few false unlocks (see hunt/gate_data/params.json): most open, none opens a
    wrong clue."""
    results = []  # (text, expected clue, opened clue)
    for clue in Clue.objects.filter(word__hunt=demo_hunt).select_related("avatar"):
        for text in clue.examples:
            others = [
                matcher.ClueSpec.of(c, leave_out=text)
                for c in Clue.objects.filter(avatar=clue.avatar)
            ]
            names = frozenset(clue.avatar.name.lower().split())
            results.append((text, clue.pk, matcher.match(text, others, names=names).opened))
    for slug, texts in PARAPHRASES.items():
        avatar = Avatar.objects.get(slug=slug)
        keys = {c.pk for c in Clue.objects.filter(avatar=avatar)}
        for text in texts:
            opened = opened_by(avatar, text).opened
            results.append((text, opened if opened in keys else "a clue of " + slug, opened))
    missed = [text for text, expected, opened in results if opened != expected]
    assert not [r for r in results if r[2] is not None and r[2] != r[1]]  # no wrong clue
    assert len(missed) <= 0.15 * len(results), missed


def test_near_misses_of_the_demo_clues_open_nothing(demo_hunt):
    opened = []
    for clue in Clue.objects.filter(word__hunt=demo_hunt).select_related("avatar"):
        opened += [t for t in clue.counterexamples if opened_by(clue.avatar, t).opened]
    for slug, texts in NEAR_MISSES.items():
        avatar = Avatar.objects.get(slug=slug)
        opened += [t for t in texts if opened_by(avatar, t).opened]
    assert opened == []


def test_the_right_question_in_context_opens(demo_hunt):
    marta = Avatar.objects.get(slug="old-marta")
    text = "I walked up the cliff to see you. Tell me, what keeps the lighthouse lamp burning?"
    assert opened_by(marta, text).opened == clue_at(demo_hunt, 3).pk


@pytest.mark.parametrize(
    "text",
    [
        # many questions at once
        "Who built the lighthouse? What keeps the lamp burning at night? How old are you? "
        "What is your cat's name? Do you like storms?",
        # a keyword list
        "lamp light burn burning fuel flame lamp fuel",
        # a list of questions in one sentence
        "Tell me who built the tower, what keeps the lamp burning, where the oil is kept, "
        "when you light it and why the glass is green.",
        # a wall of text with the right question buried in it
        "Nice day. The sea is calm. I like boats. My name is Ann. I came by ferry. "
        "What keeps the lighthouse lamp burning at night? Thanks.",
    ],
)
def test_stuffed_messages_open_nothing(demo_hunt, text):
    assert opened_by(Avatar.objects.get(slug="old-marta"), text).opened is None


def test_many_questions_without_question_marks_open_nothing(demo_hunt):
    """Six guesses as sentences ending in "." are as many questions as six "?"."""
    text = (
        "who lit the lamp. what colour is the lamp. what feeds your lamp at night. "
        "how tall is the lamp. where is the flame. whose lamp is it."
    )
    decision = opened_by(Avatar.objects.get(slug="old-marta"), text)
    assert decision.opened is None and decision.reason == "questions"


def test_two_right_questions_in_one_message_open_neither(demo_hunt):
    quill = Avatar.objects.get(slug="professor-quill")
    text = "Which book in your library may nobody borrow? Why do your clocks run backwards?"
    decision = opened_by(quill, text)
    assert decision.opened is None
    assert decision.reason == "several"


@pytest.mark.parametrize(
    "text",
    [
        "W h a t   k e e p s   t h e   l i g h t h o u s e   l a m p   b u r n i n g ?",
        "What keeps the light\u200bhouse la\u200dmp burning at night?",
        "Ｗｈａｔ ｋｅｅｐｓ ｔｈｅ ｌｉｇｈｔｈｏｕｓｅ ｌａｍｐ ｂｕｒｎｉｎｇ？",
        "What kееps the lighthоuse lamp burning at night?",  # Cyrillic е and о
        "WHAT KEEPS THE LIGHTHOUSE LAMP BURNING AT NIGHT",
    ],
)
def test_normalisation_tricks_read_as_the_plain_question(demo_hunt, text):
    assert opened_by(Avatar.objects.get(slug="old-marta"), text).opened == clue_at(demo_hunt, 3).pk


def test_a_keyword_is_required_in_the_same_sentence(demo_hunt):
    marta = Avatar.objects.get(slug="old-marta")
    clue = clue_at(demo_hunt, 3)
    spec = matcher.ClueSpec(clue.pk, tuple(clue.questions), ("whale",))
    assert matcher.match("What keeps the lighthouse lamp burning at night?", [spec]).opened is None
    assert opened_by(marta, "What keeps the lighthouse lamp burning at night?").opened == clue.pk


def test_a_different_kind_of_question_is_refused_however_close(demo_hunt):
    spec = matcher.ClueSpec("treasure", ("Where did you bury the treasure?",), ("treasure",))
    assert matcher.match("Where did you bury the treasure, captain?", [spec]).opened == "treasure"
    for text in ("When did you bury the treasure?", "Why did you bury the treasure?"):
        assert matcher.match(text, [spec]).opened is None


def test_a_swapped_contrast_word_is_refused(demo_hunt):
    spec = matcher.ClueSpec("rose", ("Where does the blue rose grow?",), ("rose",))
    assert matcher.match("where do the blue roses grow?", [spec]).opened == "rose"
    assert matcher.match("Where does the red rose grow?", [spec]).opened is None


@pytest.mark.parametrize(
    ("question", "paraphrase", "near_misses"),
    [
        pytest.param(
            "Why did the elephant leave the circus?",
            "Why did the elephant leave your circus?",
            ("Why did the elephant join the circus?", "Why did the elephant return?"),
            id="opposite-verb",
        ),
        pytest.param(
            "What do you feed your elephant?",
            "what food do you give your elephant?",
            ("When do you feed your elephant?", "Where do you feed your elephant?"),
            id="narrower-kind-than-what",
        ),
    ],
)
def test_a_question_asking_something_else_is_refused(demo_hunt, question, paraphrase, near_misses):
    spec = matcher.ClueSpec("elephant", (question,), ("elephant",))
    assert matcher.match(paraphrase, [spec]).opened == "elephant"
    assert [matcher.match(text, [spec]).opened for text in near_misses] == [None, None]


def test_a_modifier_may_be_left_out_but_not_a_negation_or_keyword():
    anchors = questions.anchors_of(
        "which murder case were you never able to solve in the old town?"
    )
    assert anchors[1] == "which case were you never able to solve in the old town?"
    assert questions.anchors_of("which murder case was never solved?", ("murder",)) == (
        "which murder case was never solved?",
    )
    spec = matcher.ClueSpec(
        "currents", ("Who taught you to read the river currents?",), ("current",)
    )
    assert matcher.match("who taught you to read the currents", [spec]).opened == "currents"


def test_a_closing_phrase_may_be_left_out():
    anchors = questions.anchors_of("who gave you the top hat you wear in the ring?")
    assert anchors[1:] == ("who gave you the top hat you wear?",)
    # Not right after a function word, and never down to fewer than four words.
    assert questions.anchors_of("who did you sail with in the war?")[1:] == ("who did you sail?",)
    assert questions.anchors_of("who lives in the tower?") == ("who lives in the tower?",)
    spec = matcher.ClueSpec("hat", ("Who gave you the top hat you wear in the ring?",), ("hat",))
    assert matcher.match("who gave you that hat", [spec]).opened == "hat"


def test_a_pronoun_after_a_sentence_naming_the_topic_reads_as_the_topic():
    windows = questions.windows_of(
        ["i saw your old scar.", "how did it happen?"], frozenset({"scar"})
    )
    assert windows[-1] == "how did the scar happen?"
    spec = matcher.ClueSpec("egg", ("Where did you find the dragon egg?",), ("egg",))
    text = "That egg by the fire is as big as a barrel. Where did you find it?"
    assert matcher.match(text, [spec]).opened == "egg"


def test_someone_else_in_place_of_you_asks_something_else():
    question = "how long can you hold your breath?"
    assert questions.swaps_contrast(question, "how long can your father hold his breath?")
    assert not questions.swaps_contrast(question, "brother anselm, how long can you hold it?")
    assert not questions.swaps_contrast(
        "what herb do you put in your grandmother's soup?", "what herb is in your grandma's soup"
    )


def test_a_converse_verb_is_no_opposite():
    assert questions.swaps_contrast("why did the elephant leave?", "why did the elephant join?")
    assert not questions.swaps_contrast(
        "who taught you to play the lute?", "who did you learn from?"
    )


def test_a_count_asked_with_what_is_a_how_many_question():
    assert questions.question_kinds("what's the number of steps?") == questions.question_kinds(
        "how many steps?"
    )
    assert (
        questions.kind_relation({questions.DEGREE}, questions.question_kinds("what's the count?"))
        == "same"
    )
    assert questions.question_kinds("which person taught you?") == {questions.PERSON}


def test_what_made_or_kept_from_asks_why_but_what_keeps_asks_what():
    assert questions.question_kinds("what made you spare the dragon?") == {questions.REASON}
    assert questions.question_kinds("what kept you from shooting the stag?") == {questions.REASON}
    assert questions.question_kinds("what keeps the lamp burning?") == {questions.OPEN}


def test_how_high_is_not_how_far_but_how_many_hours_and_since_when_are_how_long():
    def relation(question: str, window: str) -> str:
        return questions.kind_relation(
            questions.question_kinds(question), questions.question_kinds(window)
        )

    assert relation("how high did it fly?", "how tall was it?") == "same"
    assert relation("how high did it fly?", "how far did it fly?") == "other"
    assert relation("how many steps are there?", "how long is the climb?") == "other"
    assert relation("how long can you hold your breath?", "how many minutes can you?") == "same"
    guiding = "how long have you been guiding caravans?"
    assert relation(guiding, "since when have you guided caravans?") == "same"
    assert relation(guiding, "for what length of time have you led caravans?") == "same"
    assert relation("when did you start guiding?", "since when have you guided caravans?") == "same"
    assert relation("how far have you walked?", "since when have you walked?") == "other"


def test_a_yes_no_question_does_not_open_a_wh_clue(demo_hunt):
    spec = matcher.ClueSpec("hut", ("Who lives in the hut above the glacier?",), ("hut",))
    assert matcher.match("Can I sleep in the hut above the glacier?", [spec]).opened is None
    assert matcher.match("Does anyone live in the hut above the glacier? Who?", [spec]).opened
    # A polite request for the answer is no yes/no question.
    assert not questions.asks_yes_or_no("could you tell me who lives in the hut?", set())


@pytest.mark.parametrize(
    "text",
    [
        "Big Sven, which part of the forest is cursed?",
        "Mr. Finch, which part of the forest is cursed?",
        "wich part of the forest is cursed",
    ],
)
def test_a_form_of_address_or_a_typo_changes_nothing(demo_hunt, text):
    spec = matcher.ClueSpec("forest", ("Which part of the forest is cursed?",), ("forest",))
    assert matcher.match(text, [spec]).opened == "forest"


def test_were_misspelt_for_where_reads_as_where():
    assert (
        questions.correct_spelling("were did you find it", frozenset()) == "where did you find it"
    )
    assert questions.correct_spelling("were you afraid", frozenset()) == "were you afraid"


def test_a_misspelt_short_word_is_corrected_but_not_a_two_letter_one():
    vocabulary = frozenset({"you", "gave", "hat", "how"})
    assert questions.correct_spelling("who gave yuo the hat", vocabulary) == "who gave you the hat"
    assert questions.correct_spelling("hw old", vocabulary) == "hw old"


def test_a_clue_threshold_overrides_the_default(demo_hunt):
    clue = clue_at(demo_hunt, 3)
    text = "What fuels the lamp at the top of the lighthouse at night?"
    assert opened_by(clue.avatar, text).opened == clue.pk
    Clue.objects.filter(pk=clue.pk).update(threshold=0.99)
    assert opened_by(clue.avatar, text).opened is None
    Clue.objects.filter(pk=clue.pk).update(threshold=0.7)
    assert opened_by(clue.avatar, "What fuels the lamp up top through the night?").opened


def test_matching_is_deterministic(demo_hunt):
    """The same message scores the same again, to float precision: torch may sum in another
    order when other threads of the process (a generation job) share its thread pool, which
    moves the seventh decimal (seen once in CI: 0.78587931 and 0.78587937)."""
    marta = Avatar.objects.get(slug="old-marta")
    clues, vocabulary = specs_of(marta)
    text = "so what keeps that old lamp going all night?"
    first = matcher.analyse(text, clues, vocabulary)
    encoder.embed.cache_clear()
    again = matcher.analyse(text, clues, vocabulary)
    assert [{k: s.score for k, s in row.items()} for row in first.scores] == [
        {k: pytest.approx(s.score, abs=1e-6) for k, s in row.items()} for row in again.scores
    ]


def test_the_tuned_parameters_are_stored_with_their_derivation():
    params = matcher.default_params()
    assert 0.5 < params.threshold < 1
    data = matcher.PARAMS_FILE.read_text()
    assert "tune_gate" in data


# The gate action ------------------------------------------------------------------------------


def test_the_right_question_records_a_discovery_and_reveals_the_word(
    demo_hunt, make_player, django_capture_on_commit_callbacks
):
    player = make_player()
    marta = Avatar.objects.get(slug="old-marta")
    message = say(player, marta, "What keeps the lighthouse lamp burning at night?")
    with (
        mock.patch("hunt.leaderboard.announce_leaderboard_change") as announce,
        django_capture_on_commit_callbacks(execute=True),
    ):
        outcome = gate.open_clues(message)
    (reveal,) = outcome.reveals
    discovery = Discovery.objects.get(player=player)
    assert (reveal.position, reveal.first, reveal.discovery_id) == (3, True, discovery.pk)
    assert reveal.word == "agent" and "agent" in reveal.reveal_line
    assert discovery.message == message and discovery.clue == clue_at(demo_hunt, 3)
    announce.assert_called_once_with(demo_hunt.pk)


def test_a_redelivered_turn_gets_the_same_reveal(demo_hunt, make_player):
    player = make_player()
    message = say(player, Avatar.objects.get(slug="old-marta"), "What fuels the lighthouse lamp?")
    first = gate.open_clues(message)
    again = gate.open_clues(message)
    assert first.reveals == again.reveals and len(first.reveals) == 1
    assert Discovery.objects.filter(player=player).count() == 1


def test_a_word_whose_turn_failed_is_revealed_again_when_asked_again(demo_hunt, make_player):
    player = make_player()
    marta = Avatar.objects.get(slug="old-marta")
    failed = say(player, marta, "What keeps the lighthouse lamp burning at night?")
    (first,) = gate.open_clues(failed).reveals
    Message.objects.filter(pk=failed.pk).update(status=Message.Status.FAILED)
    again = say(player, marta, "What fuel do you put in the lighthouse lamp?")
    (shown,) = gate.open_clues(again).reveals
    assert (shown.word, shown.first, shown.discovery_id) == ("agent", True, first.discovery_id)
    assert Discovery.objects.get(player=player).message == again
    # Once shown, it is an ordinary found word: not revealed a third time.
    assert gate.open_clues(say(player, marta, "What fuels the lighthouse lamp?")).reveals == ()


def test_a_discovered_word_does_not_open_twice(demo_hunt, make_player):
    player = make_player()
    marta = Avatar.objects.get(slug="old-marta")
    gate.open_clues(say(player, marta, "What keeps the lighthouse lamp burning at night?"))
    later = gate.open_clues(say(player, marta, "What fuel do you put in the lighthouse lamp?"))
    assert later.reveals == ()
    assert Discovery.objects.filter(player=player).count() == 1


def test_prerequisites_must_be_discovered_first(demo_hunt, make_player):
    player = make_player()
    quill = Avatar.objects.get(slug="professor-quill")
    question = "What is the title of the book you never lend to anyone?"
    assert gate.open_clues(say(player, quill, question)).reveals == ()
    discover(player, demo_hunt, 3)
    (reveal,) = gate.open_clues(say(player, quill, question)).reveals
    assert reveal.position == 12


def test_nothing_opens_outside_the_hunt_window(demo_hunt, make_player):
    Hunt.objects.filter(pk=demo_hunt.pk).update(ends_at=timezone.now())
    player = make_player()
    message = say(player, Avatar.objects.get(slug="old-marta"), "What fuels the lighthouse lamp?")
    assert gate.open_clues(message).reveals == ()
    assert not Discovery.objects.exists()


def test_each_near_miss_brings_a_nudge_then_a_cooldown(demo_hunt, make_player):
    Hunt.objects.filter(pk=demo_hunt.pk).update(gate_attempts=3, gate_cooldown_seconds=300)
    player = make_player()
    marta = Avatar.objects.get(slug="old-marta")
    hints = [gate.open_clues(say(player, marta, "What keeps the lighthouse warm?")).hint]
    hints.append(gate.open_clues(say(player, marta, "What keeps the lighthouse lamp clean?")).hint)
    # From the first near miss, in that same reply: the clue's public hint, never the word.
    assert hints == [clue_at(demo_hunt, 3).hints[0]] * 2
    gate.open_clues(say(player, marta, "What keeps the lighthouse standing at night?"))
    # Three near misses: cooling down, so even the right question opens nothing for now.
    right = say(player, marta, "What keeps the lighthouse lamp burning at night?")
    assert gate.open_clues(right).reveals == ()
    other = make_player()
    assert gate.open_clues(say(other, marta, right.text)).reveals  # the budget is per player


def test_unrelated_messages_do_not_count_as_near_misses(demo_hunt, make_player):
    Hunt.objects.filter(pk=demo_hunt.pk).update(gate_attempts=1)
    player = make_player()
    marta = Avatar.objects.get(slug="old-marta")
    for text in ("Hello!", "Do you like strong tea?", "What is your cat called?"):
        gate.open_clues(say(player, marta, text))
    assert gate.open_clues(say(player, marta, "What fuels the lighthouse lamp?")).reveals


def test_an_avatar_without_locked_words_skips_the_model(demo_hunt, make_player):
    player = make_player()
    discover(player, demo_hunt, 3)
    with mock.patch.object(gate, "match") as match:
        outcome = gate.open_clues(say(player, Avatar.objects.get(slug="old-marta"), "Hi"))
    assert outcome == gate.GateOutcome() and not match.called


def test_two_players_both_discover_and_one_is_first(demo_hunt, make_player):
    marta = Avatar.objects.get(slug="old-marta")
    ann, bob = make_player(), make_player()
    (a,) = gate.open_clues(say(ann, marta, "What keeps the lighthouse lamp burning?")).reveals
    (b,) = gate.open_clues(say(bob, marta, "What fuel do you put in the lighthouse lamp?")).reveals
    assert (a.first, b.first) == (True, False)
    assert Discovery.objects.filter(first=True).count() == 1


def test_losing_the_first_finder_race_records_a_plain_discovery(demo_hunt, make_player):
    """Race: both players saw no first finder; the partial unique constraint refuses the
    second `first=True` insert inside its savepoint, and the gate retries as not first."""
    marta = Avatar.objects.get(slug="old-marta")
    ann, bob = make_player(), make_player()
    gate.open_clues(say(ann, marta, "What keeps the lighthouse lamp burning?"))
    message = say(bob, marta, "What keeps the lighthouse lamp burning?")
    with mock.patch.object(QuerySet, "exists", return_value=False):
        discovery = gate.record_discovery(bob, clue_at(demo_hunt, 3), message)
    assert discovery is not None and discovery.first is False
    assert Discovery.objects.filter(first=True).get().player == ann


@pytest.mark.django_db(transaction=True)
def test_two_simultaneous_right_questions_make_one_discovery(make_player):
    from avatars.hunt_files import import_hunt_file
    from tests.conftest import DEMO_HUNT

    hunt = import_hunt_file(DEMO_HUNT)
    Hunt.objects.filter(pk=hunt.pk).update(
        starts_at=timezone.now() - timezone.timedelta(days=1),
        ends_at=timezone.now() + timezone.timedelta(days=1),
    )
    player = make_player()
    marta = Avatar.objects.get(slug="old-marta")
    messages = [
        say(player, marta, "What keeps the lighthouse lamp burning at night?"),
        say(player, marta, "What fuel do you put in the lamp of the lighthouse?"),
    ]
    encoder.model()  # loaded before the race, so both threads reach the database together
    outcomes = run_together(gate.open_clues, messages)
    assert Discovery.objects.filter(player=player).count() == 1
    assert sum(len(o.reveals) for o in outcomes) == 1


# The reply guard ------------------------------------------------------------------------------


def test_the_reply_guard_locks_every_word_the_player_has_not_found(demo_hunt, make_player):
    player = make_player()
    discover(player, demo_hunt, 7)  # "stool" is this player's
    message = say(player, Avatar.objects.get(slug="old-marta"), "Hello")
    guard = leaks.ReplyGuard(message, gate.GateOutcome())
    sent = guard.feed("Have a stool, the elite sit here. ") + guard.finish()
    assert guard.tripped
    assert "elite" not in sent and sent == guard.text


@pytest.mark.parametrize("typed", ["agent", "banana", "a-g-e-n-t", "b a n a n a"])
def test_an_echoed_typed_word_passes_alike_whether_locked_or_not(demo_hunt, make_player, typed):
    """ "agent" is locked, "banana" is no seed word: if only the locked word's echo were
    replaced, the guard would tell players which typed word is locked."""
    message = say(make_player(), Avatar.objects.get(slug="old-marta"), f"Is the word {typed}?")
    outcome = gate.open_clues(message)
    guard = leaks.ReplyGuard(message, outcome, said_in(turn_parts(message, outcome)))
    word = typed.replace("-", "").replace(" ", "")
    sent = guard.feed(f"{word.title()}? Never heard that word, dear. ") + guard.finish()
    assert not guard.tripped
    assert sent.startswith(f"{word.title()}? Never") and sent == guard.text


def test_the_reply_guard_lets_this_turns_word_through(demo_hunt, make_player):
    player = make_player()
    message = say(player, Avatar.objects.get(slug="old-marta"), "What fuels the lighthouse lamp?")
    outcome = gate.open_clues(message)
    guard = leaks.ReplyGuard(message, outcome)
    text = guard.feed("Steady now. ") + guard.finish()
    assert not guard.tripped
    assert text.endswith(outcome.reveals[0].reveal_line) and "agent" in text


# The matcher's checks, one at a time ------------------------------------------------------------

LAMP = matcher.ClueSpec(1, ("What keeps the lighthouse lamp burning at night?",), ("lamp",))
LAMP_AT_ALL = matcher.ClueSpec(2, ("What keeps the lighthouse lamp burning?",), ("lamp",))
BRIDGE = matcher.ClueSpec(3, ("Who built the old stone bridge?",), ("bridge",))
YOUR_LAMP = "What keeps your lamp burning at night?"
CHECK_CASES = {
    "sentences": ("Hi. Calm sea. Boats. Ferry. Gulls. Why? What keeps the lamp burning?", [LAMP]),
    "questions": ("Hm? Really? Why? What keeps the lighthouse lamp burning at night?", [LAMP]),
    "long_window": ("What keeps the lighthouse lamp burning at night " + "and " * 40 + "?", [LAMP]),
    "list": ("What keeps the lamp, the wick, the oil, the glass, the tower burning?", [LAMP]),
    "question_words": ("What who where when why keeps the lamp burning?", [LAMP]),
    "keyword_list": ("lamp lamp lamp burning", [LAMP]),
    "kind": ("Who keeps the lighthouse lamp burning at night?", [LAMP]),
    "yes_no": ("Is the lighthouse lamp burning at night?", [LAMP]),
    "contrast": ("What keeps the lighthouse lamp burning in the day?", [LAMP]),
    "keyword": ("What keeps the lighthouse light burning at night?", [LAMP]),
    "counterexample": (YOUR_LAMP, [replace(LAMP, counterexamples=(YOUR_LAMP,))]),
    "ambiguous": ("What keeps the lighthouse lamp burning at night?", [LAMP, LAMP_AT_ALL]),
    "several": ("What keeps the lighthouse lamp burning at night? Who built the old stone bridge?",
                [LAMP, BRIDGE]),
}  # fmt: skip


def refusals(text: str, clues, params: matcher.Params) -> set[str]:
    """The names of the checks that refused something of this message."""
    analysis = matcher.analyse(text, clues, params=params)
    decision = matcher.decide(analysis, clues, params)
    blocked = {s.blocked for row in analysis.scores for s in row.values()}
    return ({analysis.stuffed, decision.reason, *analysis.skipped.values()} | blocked) - {None, ""}


def test_every_check_has_a_case_here():
    assert sorted(CHECK_CASES) == sorted(c.name for c in matcher.CHECKS)


@pytest.mark.parametrize("name", sorted(CHECK_CASES))
def test_a_check_refuses_under_its_name_and_refuses_nothing_when_switched_off(name):
    text, clues = CHECK_CASES[name]
    tuned = matcher.default_params()
    assert name in refusals(text, clues, tuned)
    assert name not in refusals(text, clues, replace(tuned, without=frozenset([name])))


def test_tune_gate_without_measures_each_check_against_all_on(tmp_path):
    items = [
        {
            "id": "lamp", "scene": "lighthouse", "questions": list(LAMP.questions),
            "keywords": ["lamp"], "paraphrases": ["What keeps your lighthouse lamp lit at night?"],
            "near_misses": ["Who keeps the lighthouse lamp burning at night?"],
        }
    ]  # fmt: skip
    data = tmp_path / "tiny.json"
    data.write_text(json.dumps({"items": items}))
    out = StringIO()
    call_command(
        "tune_gate", "--data", data, "--holdout", data, "--without", "kind", "keyword", stdout=out
    )
    rows = {line.split()[0]: line.split()[1:] for line in out.getvalue().splitlines()[2:]}
    assert list(rows) == ["(none)", "kind", "keyword"]
    assert rows["(none)"][:3] == ["1.000", "/", "0.000"]  # recall / false unlocks, tiny.json
    assert rows["kind"][:3] == ["1.000", "/", "1.000"]  # the near miss asks who: now it opens


def test_staff_discover_nothing_even_with_the_right_question(demo_hunt, make_player):
    """Organizers and creators may know the right questions: the prize is not theirs, and their
    own tries must not probe the gate either (no near miss, no hint)."""
    organizer = make_player("organizer", is_staff=True)
    marta = Avatar.objects.get(slug="old-marta")
    outcome = gate.open_clues(say(organizer, marta, "What keeps the lighthouse lamp burning?"))
    assert outcome == gate.GateOutcome()
    assert not Discovery.objects.exists()
