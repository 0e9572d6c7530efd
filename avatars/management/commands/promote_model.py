"""Makes a certified model version the active one (workers use it from their next turn).

python manage.py promote_model VERSION
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from avatars import versions
from avatars.management.commands.train_avatar_model import version_named


class Command(BaseCommand):
    help = "Promote a certified model version; the active one is retired."

    def add_arguments(self, parser):
        parser.add_argument("version")

    def handle(self, *args, version, **options):
        try:
            promoted = versions.promote(version_named(version).pk)
        except versions.VersionError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            self.style.SUCCESS(f"{promoted} is active (it replaced {promoted.replaced or 'none'}).")
        )
