from __future__ import annotations

from datetime import timedelta

from django.core.management.base import BaseCommand
from django.utils import timezone

from avatars.models import Avatar, Conversation, Portrait


class Command(BaseCommand):
    help = (
        "Delete sandbox conversations (creators trying their drafts) idle for more than "
        "--hours hours, and portraits no avatar has used for as long. Run it from cron, e.g. "
        "hourly; a submitted draft keeps its transcript."
    )

    def add_arguments(self, parser):
        parser.add_argument("--hours", type=int, default=48)

    def handle(self, *args, hours: int, **options):
        cutoff = timezone.now() - timedelta(hours=hours)
        deleted = Conversation.objects.filter(sandbox=True, updated_at__lt=cutoff).delete()[1]
        # Only old rows: a portrait stored a moment ago may belong to a save not committed yet.
        unused = Portrait.objects.filter(created_at__lt=cutoff).exclude(
            digest__in=Avatar.objects.values("portrait")
        )
        portraits = unused.delete()[0]
        self.stdout.write(
            f"Deleted {deleted.get('avatars.Conversation', 0)} sandbox conversations and "
            f"{portraits} unused portraits."
        )
