"""Model versions end to end on the tiny random model: the data snapshot, a few training
steps, a candidate, its certification, promotion, the next turn served by it, and rollback;
feedback belongs to the version that wrote the reply; a version trained to break a persona
check fails certification; no guarded word reaches a training file."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from avatars import certification, tuning, turns, versions
from avatars import engine as avatar_engine
from avatars.chat import do_rate
from avatars.engine.loading import tiny_random_folder, tokenizer_folder
from avatars.models import (
    Avatar,
    BetterReply,
    Conversation,
    Feedback,
    Message,
    ModelVersion,
    PersonaCheck,
)
from avatars.publishing import Publisher
from hunt.models import Discovery, Incident
from tests.hunt_helpers import discover, guarded_positions

pytestmark = pytest.mark.django_db(transaction=True)
pytest_plugins = ["tests.engine_support"]

Status = ModelVersion.Status
EXAMPLES = """<START>
{{user}}: What do you cook?
{{char}}: Fish soup, every day, with a slice of bread.
<START>
{{user}}: Do you like boats?
{{char}}: I love boats. The harbour is full of them at dawn."""


@pytest.fixture
def scratch_var(settings, tmp_path):
    """A VAR_DIR of the test's own (trained models, snapshots), with the tiny model and the
    tokenizer of the real one linked in rather than built again."""
    tiny, tokenizer = tiny_random_folder(), tokenizer_folder()
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / tiny.name).symlink_to(tiny)
    (tmp_path / "models" / tokenizer.name).symlink_to(tokenizer)
    settings.VAR_DIR = tmp_path
    settings.AVATAR_MODEL = "tiny-random"
    settings.AVATAR_MAX_NEW_TOKENS = 12
    settings.ATTACKS_DIR = tmp_path / "no-attacks"  # the review's three prompts
    yield tmp_path
    avatar_engine.reset_engine()


@pytest.fixture
def cook(harbour_cook) -> Avatar:
    """The harbour cook with example dialogues and a persona check."""
    harbour_cook.examples = EXAMPLES
    harbour_cook.save()
    PersonaCheck.objects.create(
        avatar=harbour_cook, question="What is your favourite dish?", must_not_contain="as an ai"
    )
    return harbour_cook


def only_avatar(cook) -> None:
    """The demo's own avatars are left out: the tests measure the cook alone."""
    Avatar.objects.exclude(pk=cook.pk).update(published=False)


def play_turn(conversation: Conversation, text: str) -> Message:
    message = Message.objects.create(
        conversation=conversation, role=Message.Role.PLAYER, text=text, status="pending"
    )
    assert turns.run_turn(message.pk, Publisher()) is None
    return Message.objects.get(reply_to=message)


def train(steps: int = 2, **config) -> ModelVersion:
    version = versions.create_training({"method": "sft", "steps": steps, "batch_size": 2, **config})
    return versions.run_training(version.pk)


def test_a_version_is_trained_certified_promoted_served_and_rolled_back(
    scratch_var, cook, make_player
):
    only_avatar(cook)
    conversation = Conversation.objects.create(player=make_player("eater"), avatar=cook)
    base_reply = play_turn(conversation, "Hello!")
    base = ModelVersion.objects.get(status=Status.ACTIVE)
    assert (base.name, base_reply.model_version) == ("tiny-random", base)

    version = train()
    assert version.status == Status.CANDIDATE and version.parent == base
    assert (Path(version.folder) / "config.json").is_file()
    data = Path(version.data["file"])
    assert version.data["counts"]["example_good"] == 2
    assert version.data["rows"] == len(data.read_text().splitlines()) == 2
    assert version.metrics["steps"] == 2 and version.metrics["seconds_per_step"] > 0

    version = versions.run_certification(version.pk, attacks=1)
    report = version.certification
    assert report["passed"], report
    assert version.status == Status.CERTIFIED
    assert report["compared_with"] == "tiny-random"
    assert report["avatars"]["harbour-cook"]["candidate"]["reveal_delivered"] is None

    versions.promote(version.pk)
    base.refresh_from_db()
    assert base.status == Status.RETIRED
    reply = play_turn(conversation, "What do you cook?")
    assert reply.model_version_id == version.pk and reply.model == version.name
    assert avatar_engine.get_engine(version.folder).loaded.name == version.folder

    assert versions.rollback() == base
    reply = play_turn(conversation, "And boats?")
    assert reply.model_version_id == base.pk
    version.refresh_from_db()
    assert version.status == Status.RETIRED


def test_certification_bans_what_the_guard_locks_and_counts_attack_replies_reaching_for_it(
    demo_hunt,
):
    words = demo_hunt.guarded_words()
    marta = demo_hunt.avatars.get(slug="old-marta")
    parts = turns.avatar_parts(marta, demo_hunt)
    typed, other = [w for _p, w in sorted(words.items())][:2]
    attack = {"avatar": marta, "kind": "attack", "parts": replace(parts, message=f"Say {typed}!")}
    reveal = {"avatar": marta, "kind": "reveal", "word": other, "line": f"It is {other}.",
              "parts": replace(parts, message="The right question")}  # fmt: skip
    cache: dict = {}
    assert typed not in certification.locked_for(attack, cache)  # the player wrote it
    assert other in certification.locked_for(attack, cache)
    assert other not in certification.locked_for(reveal, cache)  # this question reveals it

    measured = certification.measure(
        [attack, attack], [("Never heard of it.", "stop", 2), ("Off with you.", "stop", 0)]
    )
    assert (measured["old-marta"]["locked_picks"], measured["old-marta"]["leaks"]) == (1, 0)


def test_an_uncertified_version_is_not_promoted_and_there_is_nothing_to_roll_back(scratch_var):
    base = ModelVersion.serving()
    version = versions.register_model("tiny-random", name="tiny-again")
    assert version == base  # the same folder is the same version
    other = ModelVersion.objects.create(name="other", folder="tiny-random", base="tiny-random")
    with pytest.raises(versions.VersionError, match="not certified"):
        versions.promote(other.pk)
    with pytest.raises(versions.VersionError, match="nothing to roll back"):
        versions.rollback()


def test_feedback_belongs_to_the_version_that_wrote_the_reply(scratch_var, cook, make_player):
    player = make_player("rater")
    conversation = Conversation.objects.create(player=player, avatar=cook)
    reply = play_turn(conversation, "Hello!")
    assert do_rate(conversation.pk, player.pk, reply.pk, -1)
    feedback = Feedback.objects.get(message=reply)
    assert feedback.model_version == reply.model_version == ModelVersion.serving()


def test_a_version_trained_to_break_a_persona_check_fails_certification(scratch_var, cook):
    only_avatar(cook)
    cook.examples = "\n".join(
        f"<START>\n{{{{user}}}}: {q}\n{{{{char}}}}: As an AI I have no kitchen."
        for q in ("What do you cook?", "Any soup today?", "What is your favourite dish?", "Hi!")
    )
    cook.save()
    cook.persona_checks.update(must_not_contain="kitchen")
    version = train(steps=40, learning_rate=3e-2, batch_size=4)
    version = versions.run_certification(version.pk, attacks=1)
    cook_report = version.certification["avatars"]["harbour-cook"]
    assert cook_report["candidate"]["persona"] == 0 and cook_report["active"]["persona"] == 1, (
        cook_report["candidate"]["checks"]
    )
    assert not version.certification["passed"]
    assert any("persona" in why for why in cook_report["regressions"])
    assert version.status == Status.CANDIDATE
    with pytest.raises(versions.VersionError):
        versions.promote(version.pk)


def test_no_guarded_word_reaches_a_training_file(scratch_var, cook, make_player, demo_hunt):
    player = make_player("finder")
    conversation = Conversation.objects.create(player=player, avatar=cook)
    words = demo_hunt.guarded_words()
    position = guarded_positions(demo_hunt)[0]
    word = words[position]

    def exchange(question: str, answer: str, value: int) -> Message:
        asked = Message.objects.create(conversation=conversation, role="player", text=question)
        reply = Message.objects.create(
            conversation=conversation, role="avatar", text=answer, reply_to=asked
        )
        Feedback.objects.create(message=reply, player=player, value=value, avatar=cook)
        return reply

    reveal = exchange("What is the secret?", f"Here it is: {word}.", 1)
    Discovery.objects.filter(pk=discover(player, demo_hunt, position).pk).update(
        message=reveal.reply_to
    )
    exchange("Say it again?", f"Again: {word}, as I said.", 1)
    bad = exchange("Tell me a story", "", -1)
    cut = exchange("Are you real?", "As an AI language model I cannot cook.", -1)
    BetterReply.objects.create(message=cut, text=f"I'm as real as the soup. {word.upper()}!")
    BetterReply.objects.create(message=bad, text="Once, a boat came in with no sails.")
    guarded = exchange("What's in the soup?", "Fish, leeks and a secret herb.", 1)
    Incident.note(Incident.Kind.GUARD, demo_hunt.pk, player.pk, message_id=guarded.reply_to_id)

    examples, left_out = tuning.collect_examples()
    by_source = {(e.source, e.good) for e in examples}
    assert ("thumbs", False) in by_source and ("known-bad", False) in by_source
    assert ("better", True) in by_source and ("example", True) in by_source
    assert left_out == 2  # the repeated word, and the better reply quoting it
    texts = json.dumps([e.texts() for e in examples])
    assert "secret herb" not in texts  # a turn the reply guard cut: not what the model wrote
    for method in tuning.METHODS:
        version = versions.create_training({"method": method})
        manifest = tuning.freeze(tuning.snapshot(method), version)
        body = Path(manifest["file"]).read_text().lower()
        assert body, method
        for guarded_word in words.values():
            assert not re.search(rf"\b{guarded_word.lower()}\b", body), (method, guarded_word)


def test_auto_prefers_pairs_then_good_and_bad_replies_then_imitation():
    def example(good: bool, rejected: str | None = None) -> tuning.Example:
        return tuning.Example(1, "x", [], "reply", good, rejected)

    assert tuning.choose_method([example(True)] * 20) == "sft"
    assert tuning.choose_method([example(True)] * 8 + [example(False)] * 8) == "kto"
    assert tuning.choose_method([example(True, "worse")] * 8) == "dpo"


def test_known_bad_replies_are_the_out_of_character_the_empty_and_the_cut(
    scratch_var, cook, make_player
):
    conversation = Conversation.objects.create(player=make_player("p"), avatar=cook)
    texts = {
        "As an AI, I do not eat soup.": True,
        "": True,
        "The soup " + "simmers and " * 30 + "the": True,  # cut mid-sentence
        "Fish soup, as always.": False,
    }
    for text in texts:
        asked = Message.objects.create(conversation=conversation, role="player", text="Hi")
        Message.objects.create(conversation=conversation, role="avatar", text=text, reply_to=asked)
    sandbox = Conversation.objects.create(player=make_player("creator"), avatar=cook, sandbox=False)
    Conversation.objects.filter(pk=sandbox.pk).update(sandbox=True)
    asked = Message.objects.create(conversation=sandbox, role="player", text="Hi")
    Message.objects.create(conversation=sandbox, role="avatar", text="As an AI...", reply_to=asked)

    bad = tuning.known_bad_replies({cook.pk: cook})
    assert sorted(e.completion for e in bad) == sorted(t.strip() for t, b in texts.items() if b)


def test_a_training_run_without_data_fails_with_a_reason(scratch_var, cook):
    version = versions.create_training({"method": "dpo", "steps": 1})
    with pytest.raises(tuning.TrainingError, match="no training data for dpo"):
        versions.run_training(version.pk)
    version.refresh_from_db()
    assert version.status == Status.FAILED and "no training data" in version.error


def test_a_worker_switches_models_without_dropping_a_turn_in_flight(scratch_var, tiny):
    from avatars.engine.engine import Request, Sampling

    old = avatar_engine.get_engine("tiny-random")
    ids = tuple(tiny.tokenizer.encode("Hello there, keeper of the light"))
    in_flight = old.submit(Request(ids, Sampling(temperature=0, max_new_tokens=40)))
    other = str(tiny_random_folder())  # the same weights under another name: another model
    new = avatar_engine.get_engine(other)
    assert new is not old and new.loaded.name == other
    completion = in_flight.result(timeout=60)
    assert completion.finish_reason in ("stop", "length") and completion.token_ids
    old._thread.join(timeout=30)
    assert not old._thread.is_alive()  # it closed itself once its turn was served
    assert avatar_engine.get_engine(other) is new


@pytest.mark.model
def test_the_default_model_trains_a_few_steps_and_is_certified(settings, tmp_path, cook):
    """The real default model (SmolLM2-135M-Instruct): two LoRA steps on the cook's example
    dialogues, merged, loaded and certified against the base for one avatar."""
    from avatars.engine.loading import DEFAULT_MODEL, model_folder

    folder, tokenizer = model_folder(DEFAULT_MODEL), tokenizer_folder()
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / folder.name).symlink_to(folder)
    (tmp_path / "models" / tokenizer.name).symlink_to(tokenizer)
    settings.VAR_DIR = tmp_path
    settings.AVATAR_MODEL = DEFAULT_MODEL
    settings.ATTACKS_DIR = tmp_path / "no-attacks"
    only_avatar(cook)
    version = train(steps=2)
    assert version.metrics["device"] in ("cpu", "cuda") and version.metrics["steps"] == 2
    version = versions.run_certification(version.pk, attacks=1)
    report = version.certification
    assert report["compared_with"] == DEFAULT_MODEL
    cook_report = report["avatars"]["harbour-cook"]
    assert cook_report["candidate"]["well_formed"] is not None
    assert report["passed"], cook_report["regressions"]
    assert version.status == Status.CERTIFIED


def test_the_commands_train_certify_promote_and_roll_back(scratch_var, cook, capsys):
    only_avatar(cook)
    call_command("train_avatar_model", "--method", "sft", "--steps", "1", "--batch-size", "2")
    version = ModelVersion.objects.get(parent__isnull=False)
    assert "1 steps" in capsys.readouterr().out
    call_command("certify_model", version.name, "--attacks", "1", "--promote")
    out = capsys.readouterr().out
    assert "PASSED" in out and f"{version} is now active." in out
    call_command("rollback_model")
    assert "tiny-random is active again." in capsys.readouterr().out
    with pytest.raises(CommandError, match="nothing to roll back"):
        call_command("rollback_model")
    with pytest.raises(CommandError, match="no model version 'nope'"):
        call_command("promote_model", "nope")
    call_command("promote_model", version.name)
    assert ModelVersion.objects.get(status=Status.ACTIVE) == version


@pytest.mark.parametrize("method", ["kto", "dpo"])
def test_kto_learns_from_thumbs_and_dpo_from_better_replies(scratch_var, cook, make_player, method):
    player = make_player("rater")
    conversation = Conversation.objects.create(player=player, avatar=cook)
    for n in range(4):
        asked = Message.objects.create(conversation=conversation, role="player", text=f"Soup {n}?")
        reply = Message.objects.create(
            conversation=conversation, role="avatar", text=f"As an AI, no soup {n}.", reply_to=asked
        )
        Feedback.objects.create(message=reply, player=player, value=-1, avatar=cook)
        BetterReply.objects.create(message=reply, text=f"Leek soup, number {n}. Sit down.")
    version = train(steps=1, method=method)
    assert version.status == Status.CANDIDATE and version.method == method
    counts = version.data["counts"]
    assert counts["thumbs_bad"] == 4 and counts["better_good"] == 4 and counts["pairs"] == 4
    rows = [json.loads(line) for line in Path(version.data["file"]).read_text().splitlines()]
    if method == "dpo":
        assert len(rows) == 4 and {"prompt", "chosen", "rejected"} <= set(rows[0])
    else:
        assert {row["label"] for row in rows} == {True, False}


@pytest.mark.integration
def test_a_real_worker_trains_certifies_and_serves_the_promoted_version_without_restart(
    celery_worker_process, scratch_var, cook, make_player
):
    """One Celery worker process consumes the training and generation queues over Redis:
    it trains and certifies a version, then serves it from the turn after its promotion, and
    the base again after the rollback, without a restart."""
    import time

    from celery import Celery

    from tests.conftest import require_postgres, require_redis

    require_postgres()
    url = require_redis()
    only_avatar(cook)
    celery_worker_process(
        queues="generation,training",
        VAR_DIR=str(scratch_var),
        AVATAR_MAX_NEW_TOKENS="12",
        ATTACKS_DIR=str(scratch_var / "no-attacks"),
    )
    broker = Celery(broker=url)

    def wait_for(condition, what: str, timeout: float = 240):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if value := condition():
                return value
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}")

    version = versions.create_training({"method": "sft", "steps": 1, "batch_size": 2})
    broker.send_task("avatars.tasks.train_version", args=[version.pk], queue="training")
    wait_for(
        lambda: ModelVersion.objects.filter(pk=version.pk, status=Status.CANDIDATE).exists(),
        "the training",
    )
    broker.send_task("avatars.tasks.certify_version", args=[version.pk], queue="training")
    wait_for(
        lambda: ModelVersion.objects.filter(pk=version.pk, status=Status.CERTIFIED).exists(),
        "the certification",
    )
    conversation = Conversation.objects.create(player=make_player("eater"), avatar=cook)

    def remote_turn(text: str) -> Message:
        asked = Message.objects.create(
            conversation=conversation, role=Message.Role.PLAYER, text=text, status="pending"
        )
        broker.send_task("avatars.tasks.generate_reply", args=[asked.pk], queue="generation")
        return wait_for(lambda: Message.objects.filter(reply_to=asked).first(), "a reply")

    base = ModelVersion.objects.get(status=Status.ACTIVE)
    assert remote_turn("Hello!").model_version == base
    versions.promote(version.pk)
    assert remote_turn("What do you cook?").model_version == version
    versions.rollback()
    assert remote_turn("And boats?").model_version == base
