"""The clue gate's second stage and what came with it (hunt/verifiers.py, hunt/crossencoder.py,
avatars/judge.py): close calls go to a verifier, which never sees the word; a follow-up reads
its pronoun through the player's previous message; counterexamples and examples take effect
from the next message; each clue gets its operating point; the measuring sets stay out of
training."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command

from avatars.models import Avatar, Conversation, Message
from hunt import crossencoder, gate, matcher
from hunt.gate_eval import CALIBRATION_RANGE, measure_clue
from hunt.leaks import normalize_message, words_of
from hunt.management.commands.bench_gate import BLIND_SETS
from hunt.models import Clue, Discovery, NearMiss
from hunt.verifiers import Verifier, configured_verifier
from tests.conftest import missing_service

LAMP = matcher.ClueSpec(1, ("What keeps the lighthouse lamp burning at night?",), ("lamp",))
UNDER = "What do you use to keep the lighthouse lamp lit?"  # 0.77: under 0.805, in the band
OVER = "What keeps the lighthouse lamp lit at night?"  # 0.89: over it, in the band
MARTA_PHRASINGS = [
    "What keeps your lamp going at night?",
    "what do you burn in that lamp up there to keep it going all night?",
    "What do you use to keep the lighthouse lamp lit?",
    "How does the lighthouse light stay on through the night?",
]


class Scripted(Verifier):
    """Answers with a fixed score, and remembers what it was shown."""

    name = "scripted"
    yes_at, no_under = 0.7, 0.3
    score = 0.9
    seen: list[tuple[str, tuple[str, ...]]] = []

    def scores(self, sentence, questions):
        Scripted.seen.append((sentence, tuple(questions)))
        return [self.score] * len(questions)


def scripted(score: float) -> Scripted:
    verifier = Scripted()
    verifier.score = score
    return verifier


def opened(text: str, verifier=None, clues=(LAMP,), context: str = ""):
    return matcher.match(text, list(clues), verifier=verifier, context=context).opened


@pytest.fixture
def trained():
    """The trained cross-encoder, as `make test` leaves it in GATE_VERIFIER_DIR."""
    if not crossencoder.available():
        missing_service("the gate's cross-encoder is not trained: run `make gate-verifier`")
    configured_verifier.cache_clear()
    yield
    configured_verifier.cache_clear()


def say(player, avatar, text: str) -> Message:
    conversation, _ = Conversation.objects.get_or_create(player=player, avatar=avatar)
    return Message.objects.create(
        conversation=conversation, role=Message.Role.PLAYER, text=text, status="pending"
    )


# The band ----------------------------------------------------------------------------------


def test_a_close_call_under_the_threshold_opens_when_the_verifier_says_yes():
    assert opened(UNDER) is None
    assert opened(UNDER, scripted(0.9)) == LAMP.key
    assert opened(UNDER, scripted(0.1)) is None


def test_a_close_call_over_the_threshold_stays_shut_when_the_verifier_says_no():
    assert opened(OVER) == LAMP.key
    assert opened(OVER, scripted(0.1)) is None
    assert opened(OVER, scripted(0.9)) == LAMP.key


def test_an_unsure_verifier_leaves_the_first_stage_to_decide():
    assert opened(UNDER, scripted(0.5)) is None
    assert opened(OVER, scripted(0.5)) == LAMP.key


def test_far_under_the_threshold_the_verifier_is_not_asked():
    Scripted.seen = []
    assert opened("How old is your cat?", scripted(1.0)) is None
    assert Scripted.seen == []


def test_a_long_message_is_left_to_the_first_stage():
    Scripted.seen = []
    padding = " ".join(["I have walked a long way along the cliffs to see you today."] * 3)
    assert opened(f"{padding} {UNDER}", scripted(1.0)) is None
    assert opened(f"{padding} {OVER}", scripted(0.0)) == LAMP.key
    assert Scripted.seen == []


def test_a_check_still_blocks_what_the_verifier_would_open():
    assert opened("Who keeps the lighthouse lamp burning at night?", scripted(1.0)) is None


def test_the_verifier_never_sees_a_guarded_word(demo_hunt, make_player, settings):
    settings.GATE_VERIFIER = "tests.test_gate_verifier.Scripted"
    configured_verifier.cache_clear()
    Scripted.seen = []
    try:
        for avatar in Avatar.objects.filter(clues__isnull=False).distinct():
            for clue in Clue.objects.filter(avatar=avatar):
                for text in [*clue.questions, *clue.examples, *MARTA_PHRASINGS]:
                    gate.open_clues(say(make_player(), avatar, text))
    finally:
        configured_verifier.cache_clear()
    assert Scripted.seen  # it was asked
    words = [w.lower() for w in demo_hunt.guarded_words().values()]
    shown = " ".join(s + " " + " ".join(q) for s, q in Scripted.seen).lower()
    assert not [w for w in words if w in shown.split()]


# Follow-ups ----------------------------------------------------------------------------------


def test_a_follow_up_reads_its_pronoun_through_the_previous_message():
    follow_up = "what keeps it going all night?"
    assert opened(follow_up) is None
    assert opened(follow_up, context="I saw the lamp at the top of your tower") == LAMP.key


def test_the_previous_message_is_never_scored_again():
    assert opened("hello there", context=LAMP.questions[0]) is None
    assert opened("and you?", context=LAMP.questions[0]) is None


def test_the_gate_gives_the_matcher_the_players_previous_message(demo_hunt, make_player):
    player = make_player()
    marta = Avatar.objects.get(slug="old-marta")
    gate.open_clues(say(player, marta, "I saw the lamp at the top of your tower."))
    assert gate.open_clues(say(player, marta, "what keeps it going all night?")).reveals


# The demo hunt with the trained verifier -----------------------------------------------------


def test_the_four_phrasings_of_the_issue_open_marthas_clue(trained, demo_hunt, make_player):
    marta = Avatar.objects.get(slug="old-marta")
    for text in MARTA_PHRASINGS:
        outcome = gate.open_clues(say(make_player(), marta, text))
        assert [r.position for r in outcome.reveals] == [3], text


def test_marthas_counterexamples_still_open_nothing(trained, demo_hunt, make_player):
    marta = Avatar.objects.get(slug="old-marta")
    clue = Clue.objects.get(avatar=marta)
    for text in clue.counterexamples:
        assert gate.open_clues(say(make_player(), marta, text)).reveals == (), text


def test_a_counterexample_shuts_its_message_from_the_next_message_on(demo_hunt, make_player):
    marta = Avatar.objects.get(slug="old-marta")
    text = "What keeps the big lamp burning at night?"
    assert gate.open_clues(say(make_player(), marta, text)).reveals
    clue = Clue.objects.get(avatar=marta)
    clue.counterexamples = [*clue.counterexamples, text]
    clue.save(update_fields=["counterexamples"])
    gate.calibrate_clues(marta.pk)
    assert gate.open_clues(say(make_player(), marta, text)).reveals == ()
    assert gate.try_message(clue, text).blocked == "counterexample"


def test_an_example_opens_from_the_next_message_on(demo_hunt, make_player):
    marta = Avatar.objects.get(slug="old-marta")
    text = "Marta, what is the secret of your light?"  # vague: the organizer wants it to open
    assert not gate.try_message(Clue.objects.get(avatar=marta), text).opened
    clue = Clue.objects.get(avatar=marta)
    clue.examples = [*clue.examples, text]
    clue.save(update_fields=["examples"])
    gate.calibrate_clues(marta.pk)
    assert gate.open_clues(say(make_player(), marta, text)).reveals


def test_trying_a_message_records_nothing(demo_hunt):
    clue = Clue.objects.select_related("avatar").get(avatar__slug="old-marta")
    trial = gate.try_message(clue, clue.questions[0])
    near = gate.try_message(clue, "What keeps the lighthouse lamp clean?")
    assert trial.opened and trial.anchors[0].score == pytest.approx(1.0, abs=1e-4)
    assert not near.opened and near.near
    assert not Discovery.objects.exists() and not NearMiss.objects.exists()


# Operating points ----------------------------------------------------------------------------


def test_importing_a_hunt_calibrates_each_clue_and_a_hand_set_threshold_wins(demo_hunt):
    low, high = CALIBRATION_RANGE
    for clue in Clue.objects.filter(word__hunt=demo_hunt):
        assert low <= clue.calibrated_threshold <= high
        assert clue.calibration["examples"][1] == len(clue.examples)
        assert clue.threshold_source() == "calibrated"
        assert matcher.ClueSpec.of(clue).threshold == clue.calibrated_threshold
    clue.threshold = 0.9
    assert clue.threshold_source() == "clue" and matcher.ClueSpec.of(clue).threshold == 0.9


def test_calibration_keeps_counterexamples_shut_and_reports_what_the_gate_does(demo_hunt):
    verifier = configured_verifier()
    for clue in Clue.objects.filter(word__hunt=demo_hunt).select_related("avatar"):
        clues = list(Clue.objects.filter(avatar=clue.avatar))
        names = frozenset(words_of(normalize_message(clue.avatar.name)))
        examples, counter = measure_clue(clue, clues, names, verifier=verifier)
        assert clue.calibration["examples"] == [examples.opened, examples.positives], clue
        assert clue.calibration["counterexamples"] == [0, counter.negatives], clue


# Training ------------------------------------------------------------------------------------


def test_the_measuring_sets_never_train_the_verifier():
    measuring = {"holdout2.json", *BLIND_SETS}
    assert not measuring & set(crossencoder.TRAINING_SETS)
    for name in measuring:
        about = json.loads((matcher.DATA_DIR / name).read_text())["about"]
        assert "never used for training" in about.lower(), name


def test_a_trained_model_is_saved_loaded_and_left_alone_when_up_to_date(tmp_path):
    pairs = [("what fuels your lamp?", LAMP.questions[0], 1),
             ("who built your lamp?", LAMP.questions[0], 0)]  # fmt: skip
    meta = crossencoder.train(tmp_path, pairs=pairs)
    assert meta["steps"] == crossencoder.RECIPE["epochs"] and meta["data_hash"] == "custom"
    (p,) = crossencoder.probabilities("what fuels your lamp?", LAMP.questions, tmp_path)
    assert 0.0 <= p <= 1.0
    out = StringIO()
    meta_file = tmp_path / crossencoder.META
    meta_file.write_text(json.dumps({**meta, "data_hash": crossencoder.data_hash()}))
    call_command("train_gate_verifier", "--folder", str(tmp_path), stdout=out)
    assert "up to date" in out.getvalue()


def test_the_judge_reads_a_yes_or_no_from_the_avatar_model(settings):
    from avatars.judge import JudgeVerifier

    settings.AVATAR_MODEL = "tiny-random"
    verdict = JudgeVerifier().verify(UNDER, [LAMP.questions[0], "Who built the lighthouse?"])
    assert verdict.answer in {"yes", "no", "unsure"} and 0.0 <= verdict.score <= 1.0
    assert verdict.question in {LAMP.questions[0], "Who built the lighthouse?"}


def test_a_blocked_score_keeps_the_question_that_scored_it():
    analysis = matcher.analyse("Who keeps the lighthouse lamp burning at night?", [LAMP])
    (score,) = [s for row in analysis.scores for s in row.values()]
    assert score.blocked == "kind"
    assert score.question == normalize_message(LAMP.questions[0])
