"""Fills the console's copies and counters from the rows an existing event already has: each
feedback's avatar and model, each conversation's last say, and the hunts' per-minute activity."""

from django.db import migrations
from django.db.models import Count, Max, OuterRef, Subquery
from django.db.models.functions import TruncMinute


def backfill(apps, schema_editor):
    Feedback = apps.get_model("avatars", "Feedback")
    Conversation = apps.get_model("avatars", "Conversation")
    Message = apps.get_model("avatars", "Message")
    Activity = apps.get_model("hunt", "Activity")
    Discovery = apps.get_model("hunt", "Discovery")

    rated = Message.objects.filter(pk=OuterRef("message_id"))
    Feedback.objects.update(
        avatar_id=Subquery(rated.values("conversation__avatar_id")[:1]),
        model=Subquery(rated.values("model")[:1]),
    )
    said = (
        Message.objects.filter(conversation_id=OuterRef("pk"), role="player")
        .values("conversation_id")
        .annotate(last=Max("created_at"))
        .values("last")
    )
    Conversation.objects.update(last_said_at=Subquery(said[:1]))

    counts: dict[tuple[int, object], dict[str, int]] = {}
    messages = (
        Message.objects.filter(role="player", conversation__avatar__hunt__isnull=False)
        .annotate(minute=TruncMinute("created_at"))
        .values("conversation__avatar__hunt_id", "minute")
        .annotate(n=Count("id"))
    )
    for row in messages:
        key = (row["conversation__avatar__hunt_id"], row["minute"])
        counts.setdefault(key, {})["messages"] = row["n"]
    found = (
        Discovery.objects.annotate(minute=TruncMinute("found_at"))
        .values("word__hunt_id", "minute")
        .annotate(n=Count("id"))
    )
    for row in found:
        counts.setdefault((row["word__hunt_id"], row["minute"]), {})["discoveries"] = row["n"]
    Activity.objects.bulk_create(
        [Activity(hunt_id=hunt, minute=minute, **n) for (hunt, minute), n in counts.items()],
        batch_size=1000,
    )


class Migration(migrations.Migration):
    dependencies = [
        ("avatars", "0004_console"),
        ("hunt", "0006_console"),
    ]

    operations = [migrations.RunPython(backfill, migrations.RunPython.noop)]
