"""Fine-tunes the avatar model on the product's own data: a new model version.

    python manage.py train_avatar_model [--method auto|sft|kto|dpo] [--steps 60] [--seconds 0]
        [--seed 0] [--batch-size 4] [--from VERSION] [--certify] [--promote]

Trains from the active version (or `--from`), within the step budget and, when given, the
time budget, with a progress bar; the merged model lands in var/models/versions/<name>/ and
the version is a candidate. `--certify` certifies it; `--promote` then promotes it when it
passed. See docs/model-versions.md.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from avatars import tuning, versions
from avatars.models import ModelVersion


class Command(BaseCommand):
    help = (
        "Fine-tune the avatar model (LoRA, TRL) on example dialogues, feedback and better replies."
    )

    def add_arguments(self, parser):
        parser.add_argument("--method", default="auto", choices=["auto", *tuning.METHODS])
        parser.add_argument("--steps", type=int, default=tuning.DEFAULTS["steps"])
        parser.add_argument("--seconds", type=int, default=0, help="time budget (0: none)")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--batch-size", type=int, default=tuning.DEFAULTS["batch_size"])
        parser.add_argument("--from", dest="parent", help="the version to start from")
        parser.add_argument("--certify", action="store_true")
        parser.add_argument("--promote", action="store_true", help="when certified")

    def handle(self, *args, method, steps, seconds, seed, batch_size, parent, certify, promote,
               **options):  # fmt: skip
        if steps < 1:
            raise CommandError("--steps must be at least 1")
        parent_version = version_named(parent) if parent else None
        config = {
            "method": method,
            "steps": steps,
            "seconds": seconds,
            "seed": seed,
            "batch_size": batch_size,
        }
        version = versions.create_training(config, parent_version)
        self.stdout.write(f"training {version} from {version.parent} ({method})")
        try:
            version = versions.run_training(version.pk, show_bar=True)
        except tuning.TrainingError as exc:
            raise CommandError(str(exc)) from None
        m, data = version.metrics, version.data
        self.stdout.write(
            self.style.SUCCESS(
                f"{version}: {version.method}, {m['steps']} steps in {m['seconds']}s "
                f"({m['seconds_per_step']} s/step on {m['device']}), loss {m['first_loss']} -> "
                f"{m['last_loss']}; data {data['counts']}, sha256 {data['sha256'][:12]}"
            )
        )
        if certify or promote:
            from django.core.management import call_command

            call_command("certify_model", version.name, *(["--promote"] if promote else []))


def version_named(name: str) -> ModelVersion:
    version = ModelVersion.objects.filter(name=name).first()
    if version is None:
        names = ", ".join(ModelVersion.objects.values_list("name", flat=True)[:20]) or "none yet"
        raise CommandError(f"no model version {name!r} (versions: {names})")
    return version
