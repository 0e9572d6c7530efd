"""Upgrading a server that already ran an event: the console's copies and counters are filled
from the rows that exist (avatars/migrations/0005_backfill_console.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [
    ("avatars", "0003_seal_conversation_texts"),
    ("hunt", "0005_hunt_claims_need_all_words_and_address_budget"),
]


def migrate(targets=None):
    """Migrates to `targets`, or forward to the newest migrations; returns the models then."""
    executor = MigrationExecutor(connection)
    targets = targets or executor.loader.graph.leaf_nodes()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def test_upgrading_fills_feedback_copies_last_says_and_per_minute_activity():
    old = migrate(BEFORE)
    try:
        User = old.get_model("auth", "User")
        Hunt = old.get_model("hunt", "Hunt")
        SeedWord = old.get_model("hunt", "SeedWord")
        Player = old.get_model("hunt", "Player")
        Discovery = old.get_model("hunt", "Discovery")
        Avatar = old.get_model("avatars", "Avatar")
        Conversation = old.get_model("avatars", "Conversation")
        Message = old.get_model("avatars", "Message")
        Feedback = old.get_model("avatars", "Feedback")

        now = timezone.now()
        hunt = Hunt.objects.create(
            slug="old", title="Old", starts_at=now - timedelta(days=1), ends_at=now + timedelta(1)
        )
        word = SeedWord.objects.create(hunt=hunt, position=1)
        player = Player.objects.create(user=User.objects.create(username="ann"))
        avatar = Avatar.objects.create(hunt=hunt, slug="marta", name="Marta", persona="A keeper.")
        conversation = Conversation.objects.create(player=player, avatar=avatar)
        asked = [
            Message.objects.create(conversation=conversation, role="player", text=f"q{n}")
            for n in range(3)
        ]
        reply = Message.objects.create(
            conversation=conversation, role="avatar", text="a", reply_to=asked[0]
        )
        Feedback.objects.create(message=reply, player=player, value=1)
        Discovery.objects.create(player=player, word=word, first=True)
    finally:
        new = migrate()

    feedback = new.get_model("avatars", "Feedback").objects.get()
    assert feedback.avatar_id == avatar.pk
    said = new.get_model("avatars", "Conversation").objects.get().last_said_at
    assert said == max(m.created_at for m in asked)
    activity = new.get_model("hunt", "Activity").objects.filter(hunt_id=hunt.pk)
    assert sum(a.messages for a in activity) == 3
    assert sum(a.discoveries for a in activity) == 1
