"""Train the clue gate's cross-encoder (hunt/crossencoder.py) into GATE_VERIFIER_DIR.

    python manage.py train_gate_verifier [--force] [--folder DIR]

Does nothing when the folder already holds a model trained from the same recipe and data
(`make demo` and `make test` call it every time). 8 to 12 minutes on two CPU cores.
"""

from __future__ import annotations

import time
from pathlib import Path

from django.core.management.base import BaseCommand

from hunt import crossencoder


class Command(BaseCommand):
    help = "Train the clue gate's cross-encoder (GATE_VERIFIER=cross) unless it is up to date."

    def add_arguments(self, parser):
        parser.add_argument("--force", action="store_true", help="train even when up to date")
        parser.add_argument("--folder", type=Path, help="default: GATE_VERIFIER_DIR")

    def handle(self, *args, force: bool, folder: Path | None, **options):
        folder = folder or crossencoder.model_dir()
        meta = crossencoder.trained_meta(folder)
        if meta and meta["data_hash"] == crossencoder.data_hash() and not force:
            self.stdout.write(f"Gate verifier up to date in {folder} ({meta['data_hash']}).")
            return
        started = time.monotonic()
        pairs = len(crossencoder.training_pairs())
        self.stdout.write(f"Training the gate verifier on {pairs} pairs into {folder}")
        meta = crossencoder.train(folder, progress=self._progress(started))
        self.stdout.write("")
        self.stdout.write(
            self.style.SUCCESS(
                f"Gate verifier trained in {time.monotonic() - started:.0f}s "
                f"({meta['steps']} steps, data {meta['data_hash']})."
            )
        )

    def _progress(self, started: float):
        # A bar redrawn in place on a terminal; a line every 5% in a log (CI, make demo | tee).
        terminal = self.stdout.isatty()

        def show(step: int, steps: int, loss: float) -> None:
            if not terminal and step % max(steps // 20, 1) and step != steps:
                return
            done = int(30 * step / steps)
            elapsed = time.monotonic() - started
            eta = elapsed / step * (steps - step)
            start = "\r" if terminal else ""
            self.stdout.write(
                f"{start}[{'#' * done}{'.' * (30 - done)}] {step}/{steps} "
                f"loss {loss:.3f}, {elapsed:.0f}s, about {eta:.0f}s left",
                ending="" if terminal else "\n",
            )
            self.stdout.flush()

        return show
