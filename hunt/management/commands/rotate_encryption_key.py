from __future__ import annotations

from django.apps import apps
from django.core.management.base import BaseCommand, CommandError
from django.db import models, transaction
from django.db.models.functions import Cast

from hunt import crypto
from hunt.models import SeedWord

PROGRESS_EVERY = 100


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored guarded word, then every sealed conversation text, with the "
        "newest (first) key of ENCRYPTION_KEY, so that older keys can be dropped "
        "(docs/security.md). What is already under it is left as it is; one unreadable word "
        "stops it and nothing changes."
    )

    def handle(self, *args, **options):
        self.rotate_words()
        for model in apps.get_models():
            for field in model._meta.concrete_fields:
                if isinstance(field, crypto.SealedTextField):
                    self.rotate_texts(model, field.name)

    def rotate_texts(self, model, name: str) -> None:
        """Seals again, under the newest key, each text of `model.name` that is not yet.

        Row by row, without a long lock: these tables are written all through an event. Race:
        a turn rewriting a text (a summary folded) between the read and the write here; the
        update only applies while the stored value is still the one read, so the newer text
        is kept (and sealed under the newest key already).
        """
        rows = model.objects.annotate(stored=Cast(name, models.TextField()))
        done = 0
        for pk, stored in rows.values_list("pk", "stored").iterator(chunk_size=1000):
            if not crypto.sealed_under_newest(stored):
                clear = crypto.open_text(stored)
                done += rows.filter(pk=pk, stored=stored).update(**{name: clear})
        label = f"{model._meta.verbose_name_plural} ({name})"
        self.stdout.write(self.style.SUCCESS(f"Sealed {done} {label} with the newest key."))

    def rotate_words(self) -> None:
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
