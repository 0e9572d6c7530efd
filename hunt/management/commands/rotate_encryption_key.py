from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from hunt import crypto
from hunt.models import SeedWord

PROGRESS_EVERY = 100


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored guarded word with the newest (first) key of ENCRYPTION_KEY, so "
        "that older keys can be dropped (docs/security.md). Words already under it are left as "
        "they are; one unreadable word stops it and nothing changes."
    )

    def handle(self, *args, **options):
        with transaction.atomic():
            # Locked until the commit (SQLite: the whole file, from BEGIN IMMEDIATE): a word an
            # organizer saves meanwhile waits, instead of being overwritten by the old one.
            seeds = list(
                SeedWord.objects.select_for_update().exclude(word_encrypted="").order_by("pk")
            )
            changed = []
            for done, seed in enumerate(seeds, 1):
                try:
                    token = crypto.reencrypt(seed.word_encrypted)
                except ValueError as exc:
                    raise CommandError(f"{seed}: {exc}") from None
                if token != seed.word_encrypted:
                    seed.word_encrypted = token
                    changed.append(seed)
                if done % PROGRESS_EVERY == 0 or done == len(seeds):
                    self.stdout.write(f"{done}/{len(seeds)} words checked")
            SeedWord.objects.bulk_update(changed, ["word_encrypted"], batch_size=500)
        self.stdout.write(
            self.style.SUCCESS(
                f"Re-encrypted {len(changed)} of {len(seeds)} guarded words with the newest key."
            )
        )
