from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from avatars.hunt_files import HuntFileError, import_hunt_file


class Command(BaseCommand):
    help = "Validate a hunt file (lostwallet.hunt/1) and create or update its hunt."

    def add_arguments(self, parser):
        parser.add_argument("file", help="path of the hunt file (JSON)")

    def handle(self, *args, file: str, **options):
        try:
            hunt = import_hunt_file(file)
        except HuntFileError as exc:
            for problem in exc.problems:
                self.stderr.write(f"  {problem}")
            raise CommandError(
                f"{file} was refused ({len(exc.problems)} problem(s)); nothing was written."
            ) from None
        guarded = sum(1 for w in hunt.words.all() if w.has_word)
        self.stdout.write(
            self.style.SUCCESS(
                f"Imported hunt {hunt.slug!r}: {hunt.avatars.count()} avatars, "
                f"{guarded} words guarded here, status {hunt.status}."
            )
        )
