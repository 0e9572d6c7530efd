"""Certifies a model version for every avatar, against the active version.

    python manage.py certify_model VERSION [--attacks N] [--promote]
    python manage.py certify_model --new-base [FOLDER]   # AVATAR_MODEL (or FOLDER) as a new base

Prints, per avatar, the persona-check pass rate, the out-of-character rate on the probe
questions, well-formed replies, reveals and leaks, for the version and the active one, and
why it fails. Exits with status 1 when the version fails. See docs/model-versions.md.
"""

from __future__ import annotations

import sys

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from avatars import versions
from avatars.certification import render_report
from avatars.management.commands.train_avatar_model import version_named


class Command(BaseCommand):
    help = "Certify a model version: persona checks, probes, reveals, attacks, for every avatar."

    def add_arguments(self, parser):
        parser.add_argument("version", nargs="?", help="the version's name")
        parser.add_argument(
            "--new-base",
            nargs="?",
            const="",
            metavar="FOLDER",
            help="register a base model (default AVATAR_MODEL) as a version, then certify it",
        )
        parser.add_argument("--attacks", type=int, help="attack prompts per avatar (0: all)")
        parser.add_argument("--promote", action="store_true", help="promote it when it passes")

    def handle(self, *args, version, new_base, attacks, promote, **options):
        if new_base is not None:
            target = versions.register_model(new_base or settings.AVATAR_MODEL)
        elif version:
            target = version_named(version)
        else:
            raise CommandError("name a version, or --new-base")
        self.stdout.write(f"certifying {target}…")
        try:
            target = versions.run_certification(target.pk, attacks=attacks)
        except versions.VersionError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(render_report(target.certification))
        if not target.certification["passed"]:
            self.stderr.write(self.style.ERROR(f"{target} is not certified."))
            sys.exit(1)
        self.stdout.write(self.style.SUCCESS(f"{target} is certified."))
        if promote:
            versions.promote(target.pk)
            self.stdout.write(self.style.SUCCESS(f"{target} is now active."))
