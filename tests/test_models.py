"""Behaviour on the game's models and the constraints that close their races."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from avatars.models import Conversation, Message
from hunt.models import ApiToken, Claim, Discovery, Hunt, Player

pytestmark = pytest.mark.django_db


def test_a_player_profile_is_created_on_first_use(make_user):
    user = make_user("alice")
    player = Player.for_user(user)
    assert Player.for_user(user) == player
    assert player.name == "alice"


def test_staff_accounts_start_hidden(make_user):
    assert Player.for_user(make_user("boss", is_staff=True)).hidden is True


def test_hunt_status_follows_its_window(demo_hunt):
    now = timezone.now()
    assert demo_hunt.status == Hunt.Status.LIVE and demo_hunt.is_live()
    demo_hunt.starts_at, demo_hunt.ends_at = now + timedelta(hours=1), now + timedelta(days=1)
    assert demo_hunt.status == Hunt.Status.UPCOMING
    demo_hunt.starts_at, demo_hunt.ends_at = now - timedelta(days=2), now - timedelta(days=1)
    assert demo_hunt.status == Hunt.Status.ENDED


def test_a_hunt_cannot_end_before_it_starts(demo_hunt):
    with pytest.raises(IntegrityError):
        Hunt.objects.filter(pk=demo_hunt.pk).update(ends_at=demo_hunt.starts_at)


def test_a_player_discovers_a_word_once(demo_hunt, make_player):
    player, word = make_player(), demo_hunt.words.get(position=3)
    Discovery.objects.create(player=player, word=word)
    with pytest.raises(IntegrityError), transaction.atomic():
        Discovery.objects.create(player=player, word=word)


def test_only_one_discovery_of_a_word_is_first(demo_hunt, make_player):
    word = demo_hunt.words.get(position=3)
    Discovery.objects.create(player=make_player(), word=word, first=True)
    Discovery.objects.create(player=make_player(), word=word, first=False)
    with pytest.raises(IntegrityError), transaction.atomic():
        Discovery.objects.create(player=make_player(), word=word, first=True)


def test_a_hunt_has_one_winning_claim(demo_hunt, make_player):
    Claim.objects.create(hunt=demo_hunt, player=make_player(), result=Claim.Result.WINNER)
    Claim.objects.create(hunt=demo_hunt, player=make_player(), result=Claim.Result.CORRECT)
    with pytest.raises(IntegrityError), transaction.atomic():
        Claim.objects.create(hunt=demo_hunt, player=make_player(), result=Claim.Result.WINNER)


def test_a_client_id_is_stored_once_per_conversation(demo_hunt, make_player):
    player = make_player()
    conversation = Conversation.objects.create(player=player, avatar=demo_hunt.avatars.first())
    Message.objects.create(conversation=conversation, role="player", text="hi", client_id="c1")
    Message.objects.create(conversation=conversation, role="player", text="hi", client_id=None)
    Message.objects.create(conversation=conversation, role="player", text="hi", client_id=None)
    with pytest.raises(IntegrityError), transaction.atomic():
        Message.objects.create(conversation=conversation, role="player", text="hi", client_id="c1")


def test_a_player_message_gets_one_reply(demo_hunt, make_player):
    conversation = Conversation.objects.create(
        player=make_player(), avatar=demo_hunt.avatars.first()
    )
    ask = Message.objects.create(conversation=conversation, role="player", text="hi")
    Message.objects.create(conversation=conversation, role="avatar", text="ho", reply_to=ask)
    with pytest.raises(IntegrityError), transaction.atomic():
        Message.objects.create(conversation=conversation, role="avatar", text="ho", reply_to=ask)


def test_api_tokens_are_stored_hashed_and_authenticate(make_user):
    user = make_user()
    raw = ApiToken.issue(user)
    token = ApiToken.objects.get(user=user)
    assert raw not in token.digest
    assert ApiToken.authenticate(raw) == user
    assert ApiToken.authenticate(raw + "x") is None
    assert ApiToken.authenticate("") is None
    user.is_active = False
    user.save()
    assert ApiToken.authenticate(raw) is None


def test_guarded_words_decrypt_for_the_gate_only_through_the_hunt(demo_hunt):
    words = demo_hunt.guarded_words()
    assert sorted(words) == [3, 7, 12, 15, 18, 21]
    assert all(w.isalpha() and w.islower() for w in words.values())
