"""Model versions: which model plays the avatars, and the one-action moves between them.

- `serving_engine()`: this turn's engine and version. Every turn reads the active version, so a
  promotion or a rollback reaches each worker at its next turn: the worker loads the new model
  and its old engine finishes the turns in flight (avatars.engine.get_engine).
- `start_training` creates a version in training and runs the work (avatars/tuning.py) where
  training runs: a Celery worker of the `training` queue, or a thread of this process.
- `start_certification` likewise for avatars/certification.py.
- `promote(version)`: a certified version becomes active; the active one is retired.
- `rollback()`: the active version gives way to the one it replaced.
- `register_model(folder)`: a base model (a new `AVATAR_MODEL` folder) as a candidate, to be
  certified against the active version before it serves.
"""

from __future__ import annotations

import logging
import re
import time

from django.db import IntegrityError, transaction
from django.utils import timezone

from avatars import engine as avatar_engine
from avatars.models import ModelVersion

logger = logging.getLogger(__name__)

Status = ModelVersion.Status


class VersionError(Exception):
    """An action refused; the message says why, for the admin and the commands."""


# The version this process last served a turn with, for its heartbeat (the console's workers
# and their model).
_served: dict[str, str] = {}


def serving_engine():
    """(engine, version) for this turn: the active version's model."""
    version = ModelVersion.serving()
    engine = avatar_engine.get_engine(version.folder)
    _served["name"] = version.name
    return engine, version


def served_name() -> str | None:
    return _served.get("name")


def next_name(parent: ModelVersion) -> str:
    """`<lineage>-ft<n>`: the base model's short name and the first free number."""
    stem = re.sub(r"[^a-z0-9]+", "-", parent.base.rstrip("/").rsplit("/", 1)[-1].lower()).strip("-")
    n = ModelVersion.objects.filter(name__startswith=f"{stem}-ft").count() + 1
    while ModelVersion.objects.filter(name=f"{stem}-ft{n}").exists():
        n += 1
    return f"{stem}-ft{n}"


def create_training(config: dict, parent: ModelVersion | None = None) -> ModelVersion:
    """A version row in training from `parent` (default: the active version)."""
    parent = parent or ModelVersion.serving()
    for _attempt in range(5):
        try:
            # Race: two runs started at once pick the same free name; the unique name refuses
            # the second, which takes the next one.
            with transaction.atomic():
                return ModelVersion.objects.create(
                    name=next_name(parent),
                    folder="",
                    base=parent.base,
                    parent=parent,
                    method=config.get("method", "auto"),
                    config=config,
                    status=Status.TRAINING,
                    progress={"task": "training", "done": 0, "total": int(config.get("steps", 0))},
                )
        except IntegrityError:
            continue
    raise VersionError("could not name a new version: too many runs starting at once")


def run_training(version_id: int, show_bar: bool = False) -> ModelVersion:
    """Trains a version in training; on failure the version is marked failed with the
    reason. Idempotent: a version no longer in training is left alone."""
    from avatars import tuning

    version = ModelVersion.objects.select_related("parent").get(pk=version_id)
    if version.status != Status.TRAINING:
        return version
    try:
        version = tuning.train(
            version, on_step=progress_reporter(version, "training"), show_bar=show_bar
        )
    except Exception as exc:
        logger.exception("training %s failed", version)
        ModelVersion.objects.filter(pk=version.pk).update(
            status=Status.FAILED, error=str(exc)[:2000], progress={}
        )
        raise
    ModelVersion.objects.filter(pk=version.pk).update(progress={})
    version.progress = {}
    return version


def progress_reporter(version: ModelVersion, task: str):
    """on_step(done, total) that records progress on the version (for the admin's bar) at
    most once a second."""
    last = [0.0]

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 1 or done >= total:
            last[0] = now
            ModelVersion.objects.filter(pk=version.pk).update(
                progress={"task": task, "done": done, "total": total}
            )

    return report


def start_training(config: dict, parent: ModelVersion | None = None) -> ModelVersion:
    from avatars.tasks import enqueue_training

    version = create_training(config, parent)
    enqueue_training(version.pk)
    return version


def run_certification(version_id: int, attacks: int | None = None) -> ModelVersion:
    """Certifies a version (avatars/certification.py) and records the report: certified when
    it passed, else it stays a candidate with the report saying why."""
    from avatars import certification

    version = ModelVersion.objects.get(pk=version_id)
    check_certifiable(version)
    report = certification.certify(
        version, attacks=attacks, on_step=progress_reporter(version, "certifying")
    )
    with transaction.atomic():
        # Race: a promotion or rollback while this ran; only the report and, for a candidate,
        # its status are written, from the row as it is now.
        version = ModelVersion.objects.select_for_update().get(pk=version_id)
        version.certification = report
        version.progress = {}
        if report["passed"]:
            version.certified_at = timezone.now()
            if version.status == Status.CANDIDATE:
                version.status = Status.CERTIFIED
        elif version.status == Status.CERTIFIED:
            version.status = Status.CANDIDATE
        version.save(update_fields=["certification", "progress", "certified_at", "status"])
    return version


def check_certifiable(version: ModelVersion) -> None:
    if version.status in (Status.TRAINING, Status.FAILED):
        raise VersionError(f"{version} has no model to certify ({version.get_status_display()})")


def start_certification(version: ModelVersion) -> None:
    """Refused up front for a version with no model, so the admin says why rather than the
    job failing where nobody reads it."""
    from avatars.tasks import enqueue_certification

    check_certifiable(version)
    ModelVersion.objects.filter(pk=version.pk).update(
        progress={"task": "certifying", "done": 0, "total": 0}
    )
    enqueue_certification(version.pk)


def promote(version_id: int) -> ModelVersion:
    """Makes a certified version the active one; the active one is retired and remembered as
    what a rollback goes back to."""
    with transaction.atomic():
        # Race: two promotions, or a promotion and a rollback, at once. Both lock the active
        # row and their target; the second reads the first's outcome (and the one-active
        # constraint refuses two active rows in any case).
        version = ModelVersion.objects.select_for_update().get(pk=version_id)
        if version.status == Status.ACTIVE:
            raise VersionError(f"{version} is already active")
        if version.status not in (
            Status.CERTIFIED,
            Status.RETIRED,
        ) or not version.certification.get("passed"):
            raise VersionError(f"{version} is not certified: certify it before promoting it")
        current = ModelVersion.objects.select_for_update().filter(status=Status.ACTIVE).first()
        if current is not None:
            current.status = Status.RETIRED
            current.save(update_fields=["status"])
        version.status = Status.ACTIVE
        version.replaced = current
        version.activated_at = timezone.now()
        version.save(update_fields=["status", "replaced", "activated_at"])
    logger.info("promoted %s (replacing %s)", version, current)
    return version


def rollback() -> ModelVersion:
    """Puts back the version the active one replaced; returns it."""
    with transaction.atomic():
        # Race: as in promote.
        current = ModelVersion.objects.select_for_update().filter(status=Status.ACTIVE).first()
        if current is None or current.replaced_id is None:
            raise VersionError("the active version replaced none: there is nothing to roll back to")
        previous = ModelVersion.objects.select_for_update().get(pk=current.replaced_id)
        current.status = Status.RETIRED
        current.save(update_fields=["status"])
        previous.status = Status.ACTIVE
        previous.activated_at = timezone.now()
        previous.save(update_fields=["status", "activated_at"])
    logger.info("rolled back from %s to %s", current, previous)
    return previous


def register_model(folder: str, name: str | None = None) -> ModelVersion:
    """A base model as a candidate version (its own lineage), e.g. `AVATAR_MODEL` pointed at
    a new folder: certify it, then promote it."""
    from avatars.engine.loading import model_folder

    model_folder(folder)  # refuses a value that is no model (ImproperlyConfigured)
    version, _ = ModelVersion.objects.get_or_create(
        folder=folder,
        parent=None,
        defaults={"name": name or folder, "base": folder, "status": Status.CANDIDATE},
    )
    return version
