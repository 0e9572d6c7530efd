from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from hunt.models import Player

# Demo only: `make demo` serves on 127.0.0.1 with these printed credentials.
ACCOUNTS = [
    # username, password, superuser, display name
    ("organizer", "organizer-demo-pass", True, "Organizer"),
    ("player", "player-demo-pass", False, "Demo Player"),
]


class Command(BaseCommand):
    help = "Create (or reset) the demo organizer and player accounts and print how to sign in."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", default="8000")

    def handle(self, *args, host: str, port: str, **options):
        if not settings.DEBUG:
            # Anyone who has read the README could sign in as a superuser.
            raise CommandError(
                "demo_accounts creates a superuser with published passwords: it runs only with "
                "DEBUG=1 (as `make demo` does), never on a production server."
            )
        User = get_user_model()
        for username, password, superuser, display in ACCOUNTS:
            user, _ = User.objects.get_or_create(username=username)
            user.is_staff = user.is_superuser = superuser
            user.set_password(password)
            user.save()
            player = Player.for_user(user)
            player.display_name, player.hidden = display, superuser
            player.save(update_fields=["display_name", "hidden"])
        base = f"http://{host}:{port}"
        self.stdout.write(
            self.style.SUCCESS("\nLost Wallet demo is ready.\n")
            + f"  Play:        {base}/  (sign in as player / player-demo-pass)\n"
            + f"  Organizers:  {base}/admin/  (organizer / organizer-demo-pass)\n"
            + f"  Leaderboard: {base}/hunts/lost-wallet/leaderboard/\n"
            + f"  API docs:    {base}/api/v1/docs\n"
        )
