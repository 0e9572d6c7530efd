from __future__ import annotations

import time

from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "Convert the avatar model (AVATAR_MODEL) into its cached folder once, then load it to "
        "check that it works. Later starts of the server and workers load in under a second."
    )

    def add_arguments(self, parser):
        parser.add_argument("--model", help="model name or folder (default: AVATAR_MODEL)")
        parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override")

    def handle(self, *args, model: str | None, device: str | None, **options):
        from avatars.engine.loading import load_model, model_folder

        name = model or settings.AVATAR_MODEL
        folder = model_folder(name)
        started = time.monotonic()
        loaded = load_model(name, device)
        params = sum(p.numel() for p in loaded.model.parameters())
        self.stdout.write(
            self.style.SUCCESS(
                f"Model {name!r} ready in {folder}: {params / 1e6:.0f}M parameters on "
                f"{loaded.device} ({loaded.dtype}), loaded in {time.monotonic() - started:.2f}s."
            )
        )
