from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from avatars.studio import CREATORS, grant_creator


class Command(BaseCommand):
    help = f"Give an account the creator role (the {CREATORS!r} group): the studio at /studio/."

    def add_arguments(self, parser):
        parser.add_argument("username")

    def handle(self, *args, username: str, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No account named {username!r}.")
        grant_creator(user)
        self.stdout.write(f"{username} is a creator.")
