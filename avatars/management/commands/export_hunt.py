from __future__ import annotations

import json
import os

from django.core.management.base import BaseCommand, CommandError

from avatars.hunt_files import export_hunt_document
from hunt.models import Hunt


class Command(BaseCommand):
    help = "Write a hunt as a hunt file (lostwallet.hunt/1). It holds the guarded words in clear."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("-o", "--output", help="file to write (default: standard output)")

    def handle(self, *args, slug: str, output: str | None, **options):
        hunt = Hunt.objects.filter(slug=slug).first()
        if hunt is None:
            raise CommandError(f"No hunt with slug {slug!r}.")
        text = json.dumps(export_hunt_document(hunt), indent=2, ensure_ascii=False) + "\n"
        if output:
            # Owner-only from its creation on: the file holds the guarded words in clear. An
            # older file is emptied first, then restricted, before any word is written.
            fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with open(fd, "w", encoding="utf-8") as fh:
                os.fchmod(fh.fileno(), 0o600)
                fh.write(text)
            self.stderr.write(f"Wrote {output}. It contains the guarded words: keep it private.")
        else:
            self.stdout.write(text, ending="")
