"""The organizers' live console: who may open it, what its figures say, and its controls."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from unittest.mock import ANY

import pytest
from channels.db import database_sync_to_async
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from avatars import chat, tasks
from avatars.models import Avatar, Conversation, Feedback, Message, WorkerBeat
from console import actions
from console.figures import console_figures, group_key, percentile
from hunt import gate
from hunt.models import Activity, Claim, Clue, Discovery, Incident, NearMiss
from lostwallet.wire import CloseCode, ErrorCode
from tests.chat_support import collect_turn, open_chat, receive, session_headers

pytest_plugins = ["tests.chat_support"]

pytestmark = pytest.mark.django_db

MARTA_RIGHT = "What keeps the lighthouse lamp burning at night?"


@pytest.fixture
def organizer(demo_hunt, make_user):
    user = make_user("organizer", is_staff=True)
    demo_hunt.organizers.add(user)
    return user


@pytest.fixture
def superuser(make_user):
    return make_user("boss", is_staff=True, is_superuser=True)


def say(player, slug: str, text: str):
    """A player's message to an avatar, stored as the chat socket stores it."""
    code, session = chat.open_conversation(player.user, slug, "203.0.113.7")
    assert code is None
    message, created = chat.do_say(session.conversation_id, text, None, session.hunt_id)
    assert created
    return message


def gate_turn(player, slug: str, text: str):
    """A player's message and the gate's decision on it, as a generation job makes it; the
    turn then ends (so the player may ask again)."""
    message = say(player, slug, text)
    outcome = gate.open_clues(message)
    Message.objects.filter(pk=message.pk).update(status=Message.Status.DONE)
    return message, outcome


def figures_url(hunt) -> str:
    return reverse("console-figures", args=[hunt.slug])


# Who may open it -------------------------------------------------------------------------------


def test_players_and_staff_without_the_hunts_permission_get_403(
    client, demo_hunt, make_player, make_user
):
    player = make_player("walker")
    stranger = make_user("other-organizer", is_staff=True)
    for user in (player.user, stranger):
        client.force_login(user)
        for url in (
            reverse("console", args=[demo_hunt.slug]),
            figures_url(demo_hunt),
            reverse("console-export", args=[demo_hunt.slug, "players.csv"]),
        ):
            assert client.get(url).status_code == 403, (user, url)
        assert (
            client.post(
                reverse("console-pause", args=[demo_hunt.slug]), {"paused": "1"}
            ).status_code
            == 403
        )
    demo_hunt.refresh_from_db()
    assert not demo_hunt.paused


def test_anonymous_visitors_are_sent_to_sign_in(client, demo_hunt):
    response = client.get(reverse("console", args=[demo_hunt.slug]))
    assert response.status_code == 302
    assert "/accounts/login/" in response["Location"]


def test_the_hunts_organizers_and_superusers_open_the_console(
    client, demo_hunt, organizer, superuser
):
    for user in (organizer, superuser):
        client.force_login(user)
        page = client.get(reverse("console", args=[demo_hunt.slug]))
        assert page.status_code == 200
        assert b"console-labels" in page.content
        assert client.get(figures_url(demo_hunt)).json()["hunt"]["slug"] == demo_hunt.slug


def test_the_admin_links_each_hunt_to_its_console(client, demo_hunt, superuser):
    client.force_login(superuser)
    page = client.get(reverse("admin:hunt_hunt_changelist"))
    assert reverse("console", args=[demo_hunt.slug]).encode() in page.content


# Figures ---------------------------------------------------------------------------------------


def test_a_discovery_shows_in_the_funnel_the_feed_and_the_timeline(demo_hunt, make_player):
    finder = make_player("finder")
    _message, outcome = gate_turn(finder, "old-marta", MARTA_RIGHT)
    assert outcome.reveals
    position = outcome.reveals[0].position

    figures = console_figures(demo_hunt, with_text=False)

    row = next(w for w in figures["progress"]["funnel"] if w["position"] == position)
    assert (row["talked"], row["found"], row["first_finder"]) == (1, 1, "finder")
    assert figures["progress"]["recent_discoveries"][0]["position"] == position
    assert sum(p["discoveries"] for p in figures["progress"]["timeline"]) == 1
    assert sum(p["messages"] for p in figures["progress"]["timeline"]) == 1
    assert figures["progress"]["players"]["active_5m"] == 1
    assert figures["progress"]["messages_per_minute"] == 0.2


def near_miss(player, text: str, score: float = 0.7) -> NearMiss:
    """A near miss on Old Marta's clue, recorded as the gate records one: the console's panel
    is tested apart from what the gate currently lets through."""
    message = say(player, "old-marta", text)
    clue = Clue.objects.get(avatar__slug="old-marta")
    gate.note_near_miss(clue.word.hunt, clue, player, message, score, count=1)
    return NearMiss.objects.get(message=message)


def test_near_misses_are_grouped_by_their_words_and_text_is_for_superusers_only(
    demo_hunt, make_player
):
    near_miss(make_player("ann"), "What keeps your lamp going at night?", 0.62)
    near_miss(make_player("bob"), "What keeps your lamp going at night?", 0.71)
    near_miss(make_player("cy"), "what keeps your LAMP going at night", 0.6)

    clue = Clue.objects.get(avatar__slug="old-marta")
    full = console_figures(demo_hunt, with_text=True)
    counts = console_figures(demo_hunt, with_text=False)

    stuck = next(c for c in full["stuck"] if c["clue"] == clue.pk)
    assert (stuck["near_misses"], stuck["players"]) == (3, 3)
    assert [(g["count"], g["best"]) for g in stuck["groups"]] == [(3, 0.71)]
    bare = next(c for c in counts["stuck"] if c["clue"] == clue.pk)
    assert "groups" not in bare
    assert "lamp" not in json.dumps(counts)


def test_near_misses_worded_differently_but_alike_end_in_one_group(demo_hunt, make_player):
    near_miss(make_player("ann"), "What keeps the lamp going during the night?", 0.66)
    near_miss(make_player("bob"), "Where did you buy that old lamp?", 0.5)
    near_miss(make_player("cy"), "what keeps your lamp lit through the night", 0.64)
    newest = near_miss(make_player("dee"), "What keeps your lamp going at night?", 0.61)

    clue = Clue.objects.get(avatar__slug="old-marta")
    stuck = next(c for c in console_figures(demo_hunt, with_text=True)["stuck"])
    assert stuck["clue"] == clue.pk
    assert stuck["groups"] == [
        # The newest near miss starts the group, the others join it.
        {"text": newest.message.text, "count": 3, "best": 0.66, "near_miss": newest.pk},
        {"text": "Where did you buy that old lamp?", "count": 1, "best": 0.5, "near_miss": ANY},
    ]


def test_adding_a_stuck_question_as_an_example_opens_it_for_the_next_player(
    client, demo_hunt, make_player, superuser, django_capture_on_commit_callbacks
):
    asked = "Does the lamp ever go out when the wind howls?"
    _message, outcome = gate_turn(make_player("ann"), "old-marta", asked)
    assert not outcome.reveals
    near = near_miss(make_player("bob"), asked)

    client.force_login(superuser)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("console-add-example", args=[demo_hunt.slug]), {"near_miss": near.pk}
        )

    assert response.status_code == 200
    clue = Clue.objects.get(pk=near.clue_id)
    assert asked in clue.examples
    assert clue.calibration["examples"][1] == len(clue.examples)  # recalibrated
    _message, outcome = gate_turn(make_player("cy"), "old-marta", asked)
    assert [r.position for r in outcome.reveals] == [clue.word.position]


def test_organizers_below_superuser_may_not_add_examples(client, demo_hunt, make_player, organizer):
    near = near_miss(make_player("ann"), "What keeps your lamp going at night?")
    client.force_login(organizer)
    url = reverse("console-add-example", args=[demo_hunt.slug])
    assert client.post(url, {"near_miss": near.pk}).status_code == 403
    counterexamples = reverse("console-add-counterexample", args=[demo_hunt.slug])
    assert client.post(counterexamples, {"near_miss": near.pk}).status_code == 403
    clue = Clue.objects.get(pk=near.clue_id)
    assert "What keeps your lamp going at night?" not in clue.examples + clue.counterexamples


def test_a_stuck_question_added_as_a_counterexample_recalibrates_the_avatars_clues(
    client, demo_hunt, make_player, superuser, django_capture_on_commit_callbacks
):
    asked = "Where did you buy that old lamp?"
    near = near_miss(make_player("ann"), asked, 0.5)
    client.force_login(superuser)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("console-add-counterexample", args=[demo_hunt.slug]), {"near_miss": near.pk}
        )

    assert response.status_code == 200
    clue = Clue.objects.get(pk=near.clue_id)
    assert response.json() == {
        "clue": clue.pk,
        "examples": len(clue.examples),
        "counterexamples": len(clue.counterexamples),
    }
    assert clue.counterexamples[-1] == asked
    assert asked not in clue.examples
    assert clue.calibration["counterexamples"][1] == len(clue.counterexamples)
    assert clue.threshold_source() == "calibrated"


def test_adding_the_same_stuck_question_twice_adds_it_once(
    client, demo_hunt, make_player, superuser
):
    near = near_miss(make_player("ann"), "Where did you buy that old lamp?", 0.5)
    client.force_login(superuser)
    url = reverse("console-add-counterexample", args=[demo_hunt.slug])
    client.post(url, {"near_miss": near.pk})
    client.post(url, {"near_miss": near.pk})
    counter = Clue.objects.get(pk=near.clue_id).counterexamples
    assert counter.count("Where did you buy that old lamp?") == 1


def test_a_spent_near_miss_budget_counts_as_a_cooldown_in_force(demo_hunt, make_player):
    demo_hunt.gate_attempts = 2
    demo_hunt.save()
    player = make_player("ann")
    for _ in range(2):
        # A near miss: close, but "who" where the clue asks "what" (the `kind` check).
        _message, outcome = gate_turn(
            player, "old-marta", "Who keeps the lighthouse lamp burning at night?"
        )
        assert not outcome.reveals
    assert console_figures(demo_hunt, with_text=False)["progress"]["cooldowns"]["gate"] == 1


def test_failed_claims_count_as_claim_cooldowns_until_they_expire(demo_hunt, make_player):
    ann, bob = make_player("ann"), make_player("bob")
    Claim.objects.create(hunt=demo_hunt, player=ann, result=Claim.Result.WRONG)
    Claim.objects.create(
        hunt=demo_hunt,
        player=bob,
        result=Claim.Result.INVALID,
        created_at=timezone.now() - timedelta(hours=2),
    )
    progress = console_figures(demo_hunt, with_text=False)["progress"]
    assert progress["claims"] == {"winner": 0, "correct": 0, "wrong": 1, "invalid": 1}
    assert progress["cooldowns"]["claims"] == 1


def test_incidents_are_counted_and_offenders_ranked(demo_hunt, make_player):
    ann, bob = make_player("ann"), make_player("bob")
    for _ in range(3):
        Incident.note(Incident.Kind.GUARD, demo_hunt.pk, ann.pk, "198.51.100.1")
    Incident.note(Incident.Kind.ATTACK, demo_hunt.pk, bob.pk, "198.51.100.2", detail="injection")
    old = Incident.objects.create(kind=Incident.Kind.FLOOD, hunt=demo_hunt, player=bob)
    Incident.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=2))

    attacks = console_figures(demo_hunt, with_text=False)["attacks"]

    assert attacks["counts"]["guard"] == 3
    assert attacks["counts"]["attack"] == 1
    assert attacks["counts"]["flood"] == 0  # older than a day
    assert [(o["name"], o["incidents"]) for o in attacks["offenders"]] == [("ann", 3), ("bob", 1)]
    assert attacks["addresses"][0] == {"address": "198.51.100.1", "incidents": 3, "players": 1}
    assert attacks["recent"][0]["detail"] == "injection"


def test_rate_limited_says_are_noted_once_a_minute_per_player(demo_hunt, make_player):
    demo_hunt.chat_rate_per_minute, demo_hunt.chat_burst = 1, 1
    demo_hunt.save()
    player = make_player("ann")
    _code, session = chat.open_conversation(player.user, "old-marta", "203.0.113.9")
    assert chat.say(session, "hello", None).refusal is None
    Message.objects.filter(role="player").update(status=Message.Status.DONE)
    for n in range(3):
        assert chat.say(session, f"again {n}", None).refusal == ErrorCode.RATE_LIMITED
    incidents = Incident.objects.filter(kind=Incident.Kind.RATE_LIMITED)
    assert incidents.count() == 1
    assert incidents.get().address == "203.0.113.9"


def test_the_service_panel_reads_reply_waits_failures_and_worker_beats(
    demo_hunt, make_player, settings
):
    message = say(make_player("ann"), "old-marta", "Hello")
    conversation = message.conversation
    for waited in (100, 200, 300, 400, 5000):
        Message.objects.create(
            conversation=conversation, role="avatar", text="hi", first_token_ms=waited
        )
    Message.objects.create(conversation=conversation, role="player", text="x", status="failed")
    tasks.beat("host:1", timezone.now())
    WorkerBeat.objects.create(
        name="host:2",
        started_at=timezone.now() - timedelta(hours=1),
        seen_at=timezone.now() - timedelta(minutes=5),
    )

    service = console_figures(demo_hunt, with_text=False)["service"]

    assert service["waiting"] == 1  # the pending "Hello"
    assert service["ttft_ms"]["p50"] == 300
    assert service["ttft_ms"]["n"] == 5
    assert service["failures"] == 1
    workers = {w["name"]: w for w in service["workers"]}
    assert set(workers) == {"host:1", "host:2"}
    assert (workers["host:1"]["alive"], workers["host:2"]["alive"]) == (True, False)
    assert workers["host:1"]["model"] == settings.AVATAR_MODEL
    assert service["redis"] is None  # the unit suite runs embedded


def test_percentiles_take_the_nearest_rank():
    assert percentile([], 95) is None
    assert percentile([7], 95) == 7
    assert percentile(list(range(1, 101)), 50) == 50
    assert percentile(list(range(1, 101)), 95) == 95


def test_ratings_are_split_by_avatar_and_by_the_model_that_wrote_the_reply(demo_hunt, make_player):
    player = make_player("ann")
    message = say(player, "old-marta", "Hello")
    marta = Avatar.objects.get(slug="old-marta")
    for model, value in (("base", 1), ("base", -1), ("tuned", 1)):
        reply = Message.objects.create(
            conversation=message.conversation, role="avatar", text="hi", model=model
        )
        assert chat.do_rate(message.conversation_id, player.pk, reply.pk, value)
    assert Feedback.objects.filter(avatar=marta).count() == 3

    rows = {a["slug"]: a for a in console_figures(demo_hunt, with_text=False)["avatars"]}
    assert (rows["old-marta"]["up"], rows["old-marta"]["down"]) == (2, 1)
    assert rows["old-marta"]["by_model"] == [
        {"model": "base", "up": 1, "down": 1},
        {"model": "tuned", "up": 1, "down": 0},
    ]


def test_the_figures_take_the_same_queries_however_many_players_play(demo_hunt, make_player):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            console_figures(demo_hunt, with_text=True)
        return len(captured)

    gate_turn(make_player("p0"), "old-marta", "What keeps your lamp going at night?")
    few = queries()
    for n in range(1, 8):
        player = make_player(f"p{n}")
        gate_turn(player, "old-marta", "What keeps your lamp going at night?")
        gate_turn(player, "old-marta", MARTA_RIGHT)
        Incident.note(Incident.Kind.ATTACK, demo_hunt.pk, player.pk, f"192.0.2.{n}")
    assert queries() == few


def test_messages_are_counted_per_minute_not_per_row(demo_hunt, make_player, monkeypatch):
    # The clock is held within one minute: run across a minute's turn, the three messages
    # rightly fall into two rows (CI once did).
    held = timezone.now().replace(second=1)
    monkeypatch.setattr(timezone, "now", lambda: held)
    for n in range(3):
        say(make_player(f"p{n}"), "old-marta", "Hello")
    assert Activity.objects.get(hunt=demo_hunt).messages == 3


def test_stuck_questions_are_compared_by_their_words_alone():
    assert group_key("What keeps your LAMP going, at night?!") == group_key(
        "what keeps your lamp going at night"
    )


# Controls --------------------------------------------------------------------------------------


def test_pausing_refuses_says_and_claims_with_hunt_not_live_until_resumed(
    client, demo_hunt, make_player, organizer
):
    player = make_player("ann")
    _code, session = chat.open_conversation(player.user, "old-marta")
    client.force_login(organizer)
    pause_url = reverse("console-pause", args=[demo_hunt.slug])

    assert client.post(pause_url, {"paused": "1"}).json()["hunt"]["paused"] is True

    outcome = chat.say(session, "Hello Marta", "c1")
    assert outcome.refusal == ErrorCode.HUNT_NOT_LIVE
    assert not Message.objects.exists()
    client.force_login(player.user)
    claim = client.post(
        f"/api/v1/hunts/{demo_hunt.slug}/claim",
        {"words": ["abandon"] * 24},
        content_type="application/json",
    )
    assert claim.status_code == 409
    assert claim.json()["error"] == "hunt_not_live"

    client.force_login(organizer)
    assert client.post(pause_url, {"paused": "0"}).json()["hunt"]["paused"] is False
    assert chat.say(session, "Hello Marta", "c1").refusal is None


def test_players_pages_say_the_hunt_is_paused(client, demo_hunt):
    assert b"badge-paused" not in client.get(demo_hunt.get_absolute_url()).content
    actions.set_paused(demo_hunt, True)
    assert b"badge-paused" in client.get(demo_hunt.get_absolute_url()).content


def test_closing_registration_from_the_console(client, demo_hunt, organizer):
    client.force_login(organizer)
    url = reverse("console-registration", args=[demo_hunt.slug])
    assert client.post(url, {"open": "0"}).json()["hunt"]["registration_open"] is False
    demo_hunt.refresh_from_db()
    assert not demo_hunt.registration_open


def test_an_announcement_is_checked_and_stored(client, demo_hunt, organizer):
    client.force_login(organizer)
    url = reverse("console-announce", args=[demo_hunt.slug])
    assert client.post(url, {"text": "   "}).status_code == 400
    assert client.post(url, {"text": "x" * 301}).json()["error"] == "invalid"
    sent = client.post(url, {"text": "  Marta is back   in ten minutes "}).json()
    assert sent["text"] == "Marta is back in ten minutes"
    assert demo_hunt.announcements.get().author == organizer


def test_suspending_a_player_deactivates_the_account_and_notes_it(
    client, demo_hunt, make_player, organizer
):
    player = make_player("ann")
    client.force_login(organizer)
    url = reverse("console-suspend", args=[demo_hunt.slug, player.pk])
    assert client.post(url).status_code == 200
    player.refresh_from_db()
    player.user.refresh_from_db()
    assert not player.user.is_active
    assert player.suspended_at is not None
    assert Incident.objects.filter(kind=Incident.Kind.SUSPENDED, player=player).exists()

    assert client.post(url, {"reinstate": "1"}).status_code == 200
    player.user.refresh_from_db()
    assert player.user.is_active


def test_staff_accounts_are_not_suspended_from_the_console(demo_hunt, make_player, organizer):
    from django.core.exceptions import ValidationError

    staff = make_player("helper", is_staff=True)
    with pytest.raises(ValidationError):
        actions.suspend_player(demo_hunt, staff)
    staff.user.refresh_from_db()
    assert staff.user.is_active


# Exports ---------------------------------------------------------------------------------------


def read_csv(response) -> list[dict]:
    body = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(body)))


def test_exports_list_players_discoveries_and_claims_without_any_word(
    client, demo_hunt, make_player, organizer
):
    finder = make_player("finder")
    _message, outcome = gate_turn(finder, "old-marta", MARTA_RIGHT)
    word = outcome.reveals[0].word
    Claim.objects.create(hunt=demo_hunt, player=finder, result=Claim.Result.WRONG)
    client.force_login(organizer)

    def export(what):
        return client.get(reverse("console-export", args=[demo_hunt.slug, what]))

    players = read_csv(export("players.csv"))
    assert [(p["username"], p["words"], p["avatars_talked_to"]) for p in players] == [
        ("finder", "1", "1")
    ]
    discoveries = export("discoveries.csv")
    assert "attachment" in discoveries["Content-Disposition"]
    rows = read_csv(discoveries)
    assert [(r["position"], r["player"], r["first"]) for r in rows] == [
        (str(outcome.reveals[0].position), "finder", "1")
    ]
    assert [r["result"] for r in read_csv(export("claims.csv"))] == ["wrong"]
    snapshot = export("snapshot.json")
    assert json.loads(snapshot.content)["progress"]["claims"]["wrong"] == 1
    for what in ("players.csv", "discoveries.csv", "claims.csv"):
        assert word not in b"".join(export(what).streaming_content).decode().lower()
    assert word not in snapshot.content.decode().lower()
    assert export("secrets.txt").status_code == 404


def test_opening_a_chat_is_not_talking_a_say_is(demo_hunt, make_player):
    player = make_player("ann")
    _code, session = chat.open_conversation(player.user, "captain-rook")
    assert Conversation.objects.get(pk=session.conversation_id).last_said_at is None
    message = say(player, "old-marta", "Hello")
    assert Conversation.objects.get(pk=message.conversation_id).last_said_at is not None
    assert not Discovery.objects.exists()


# On the chat socket ----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_an_announcement_reaches_the_chat_sockets_of_the_hunt(
    demo_hunt, make_player, organizer
):
    player = await database_sync_to_async(make_player)("ann")
    client, close = await open_chat("old-marta", await session_headers(player.user))
    assert close is None
    assert (await receive(client))["type"] == "hello"

    await database_sync_to_async(actions.announce)(demo_hunt, "Back in ten minutes", organizer)

    frame = await receive(client)
    assert frame["type"] == "announcement"
    assert (frame["hunt"], frame["text"]) == (demo_hunt.slug, "Back in ten minutes")
    assert frame["at"].endswith("Z")
    await client.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_suspended_players_socket_closes_and_the_next_handshake_is_refused(
    demo_hunt, make_player
):
    player = await database_sync_to_async(make_player)("ann")
    headers = await session_headers(player.user)
    client, _close = await open_chat("old-marta", headers)
    await receive(client)

    await database_sync_to_async(actions.suspend_player)(demo_hunt, player)

    closed = await client.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": CloseCode.NOT_AUTHENTICATED}
    _client, close = await open_chat("old-marta", headers)
    assert close == CloseCode.NOT_AUTHENTICATED


@pytest.mark.django_db(transaction=True)
async def test_a_paused_hunt_refuses_the_say_with_its_client_id_and_stores_nothing(
    demo_hunt, make_player
):
    player = await database_sync_to_async(make_player)("ann")
    client, _close = await open_chat("old-marta", await session_headers(player.user))
    await receive(client)
    await database_sync_to_async(actions.set_paused)(demo_hunt, True)

    await client.send_json_to({"type": "say", "text": "Hello?", "client_id": "c-1"})

    frame = await receive(client)
    assert (frame["type"], frame["code"], frame["client_id"]) == ("error", "hunt_not_live", "c-1")
    assert not await database_sync_to_async(Message.objects.exists)()
    await client.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_reply_records_its_wait_and_model_and_a_guard_cut_is_an_incident(
    demo_hunt, make_player, engine, settings
):
    """Old Marta's reply gives away a locked word (scripted model): the guard cuts it, and the
    console lists the turn; the reply row says how long the player waited and which model."""
    player = await database_sync_to_async(make_player)("ann")
    locked = await database_sync_to_async(
        lambda: Clue.objects.select_related("word").get(avatar__slug="captain-rook")
    )()
    word = await database_sync_to_async(locked.word.reveal_word)()
    client, _close = await open_chat("old-marta", await session_headers(player.user))
    await receive(client)
    engine.script("The sea told me a word: ", f"{word}.")

    await client.send_json_to({"type": "say", "text": "Tell me a story", "client_id": "s-1"})
    ack = await receive(client)
    _tokens, terminal = await collect_turn(client, ack["message_id"])

    assert word not in terminal["text"].lower()
    reply = await database_sync_to_async(Message.objects.get)(pk=terminal["message_id"])
    assert reply.first_token_ms is not None and reply.first_token_ms > 0
    assert reply.model == settings.AVATAR_MODEL
    incidents = await database_sync_to_async(
        lambda: list(Incident.objects.values_list("kind", "player_id", "message_id"))
    )()
    assert incidents == [(Incident.Kind.GUARD, player.pk, ack["message_id"])]
    await client.disconnect()


def test_a_creator_trying_an_unpublished_avatar_of_the_hunt_counts_nowhere(demo_hunt, make_player):
    marta = Avatar.objects.get(slug="old-marta")
    creator = make_player("maker")
    Avatar.objects.filter(pk=marta.pk).update(published=False, owner=creator.user)
    code, session = chat.open_conversation(creator.user, "old-marta")
    assert code is None and session.hunt_id is None
    chat.do_say(session.conversation_id, "Testing my draft", None, session.hunt_id)
    progress = console_figures(demo_hunt, with_text=False)["progress"]
    assert progress["players"]["active_5m"] == 0
    assert sum(p["messages"] for p in progress["timeline"]) == 0


# Serving the figures ---------------------------------------------------------------------------


def test_polls_are_answered_from_the_cache_and_refreshed_in_the_background(
    client, demo_hunt, make_player, organizer, settings, monkeypatch
):
    from console import views

    started = []
    monkeypatch.setattr(views, "_refresh_soon", lambda hunt, with_text: started.append(hunt.pk))
    settings.CONSOLE_CACHE_SECONDS = 3600
    client.force_login(organizer)
    url = figures_url(demo_hunt)
    first = client.get(url).json()

    gate_turn(make_player("finder"), "old-marta", MARTA_RIGHT)
    assert client.get(url).json()["progress"] == first["progress"]  # fresh enough: cached
    assert started == []

    settings.CONSOLE_CACHE_SECONDS = 0
    stale = client.get(url).json()
    assert stale["progress"] == first["progress"]  # old figures now, a refresh for the next
    assert started == [demo_hunt.pk]

    views._compute(demo_hunt, with_text=False)  # what the refresh does
    assert client.get(url).json()["progress"]["recent_discoveries"][0]["player"] == "finder"


def test_the_hunts_state_is_never_served_stale(client, demo_hunt, organizer, settings):
    settings.CONSOLE_CACHE_SECONDS = 3600
    client.force_login(organizer)
    url = figures_url(demo_hunt)
    assert client.get(url).json()["hunt"]["paused"] is False
    actions.set_paused(demo_hunt, True)  # not through the console: no cache dropped
    assert client.get(url).json()["hunt"]["paused"] is True


def test_one_background_refresh_runs_at_a_time(demo_hunt, monkeypatch):
    from console import views

    threads = []
    monkeypatch.setattr(views.threading, "Thread", lambda **kw: threads.append(kw) or _NoStart())
    views._refresh_soon(demo_hunt, False)
    views._refresh_soon(demo_hunt, False)
    views._refresh_soon(demo_hunt, True)
    assert len(threads) == 2  # one per audience


class _NoStart:
    def start(self) -> None:
        pass
