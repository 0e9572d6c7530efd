from __future__ import annotations

from datetime import timedelta

from django.core.management.base import BaseCommand
from django.utils import timezone

from avatars.models import Conversation


class Command(BaseCommand):
    help = (
        "Delete sandbox conversations (creators trying their drafts) idle for more than "
        "--hours hours. Run it from cron, e.g. hourly; a submitted draft keeps its transcript."
    )

    def add_arguments(self, parser):
        parser.add_argument("--hours", type=int, default=48)

    def handle(self, *args, hours: int, **options):
        cutoff = timezone.now() - timedelta(hours=hours)
        deleted = Conversation.objects.filter(sandbox=True, updated_at__lt=cutoff).delete()[1]
        self.stdout.write(
            f"Deleted {deleted.get('avatars.Conversation', 0)} sandbox conversations."
        )
