"""Puts back the model version the active one replaced (workers use it from their next turn).

python manage.py rollback_model
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from avatars import versions


class Command(BaseCommand):
    help = "Roll the avatar model back to the version the active one replaced."

    def handle(self, *args, **options):
        try:
            back = versions.rollback()
        except versions.VersionError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(self.style.SUCCESS(f"{back} is active again."))
