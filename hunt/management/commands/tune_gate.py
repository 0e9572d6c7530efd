"""Re-derives the clue gate's default threshold from its tuning set.

    python manage.py tune_gate [--data FILE] [--holdout FILE ...] [--max-false-unlocks 0.02]
                               [--write] [--attacks ../shared]

Each item of the set is a clue; items of one `scene` form one avatar. Every paraphrase must open
its own clue, every near miss must open nothing. For each question-kind penalty, penalty for
anchors with a word left out (gate.anchors_of) and threshold, the command measures recall and
the false-unlock rate with the gate's own matcher, and picks the parameters with the best recall
whose false-unlock rate stays within the limit (on a tie: fewer false unlocks, then the higher
threshold). `--write` stores it in hunt/gate_data/params.json.

The chosen parameters are then measured on the held-out sets (hunt/gate_data/holdout.json and
holdout2.json: other scenes, written apart from the tuning set and never used to choose): the
numbers to expect on a hunt the gate has never seen.
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from django.core.management.base import BaseCommand

from hunt import gate

PENALTIES = (0.05, 0.1, 0.15, 0.2)
DROP_PENALTIES = (0.02, 0.03, 0.04, 0.05)
THRESHOLDS = tuple(round(t, 3) for t in np.arange(0.6, 0.951, 0.005))


class Command(BaseCommand):
    help = "Derive the clue gate's default threshold from its tuning set."

    def add_arguments(self, parser):
        parser.add_argument("--data", type=Path, default=gate.DATA_DIR / "tuning.json")
        parser.add_argument(
            "--holdout",
            type=Path,
            nargs="+",
            default=[gate.DATA_DIR / "holdout.json", gate.DATA_DIR / "holdout2.json"],
        )
        parser.add_argument("--max-false-unlocks", type=float, default=0.02)
        parser.add_argument("--write", action="store_true", help="update params.json")
        parser.add_argument(
            "--attacks",
            type=Path,
            metavar="SHARED",
            help="also send the attack corpora of SHARED/attacks/ to every scene (none may open)",
        )

    def handle(
        self, *args, data: Path, holdout: list[Path], max_false_unlocks: float, write: bool,
        attacks, **options,
    ):  # fmt: skip
        items = gate.load_tuning_items(data)
        scenes = gate.item_scenes(items)
        labelled = list(gate.labelled_texts(items))
        best = None
        curves: dict[tuple[float, float], list[tuple[float, gate.Rates]]] = {}
        for penalty, drop in itertools.product(PENALTIES, DROP_PENALTIES):
            params = gate.Params(threshold=0.0, type_penalty=penalty, drop_penalty=drop)
            analyses = [
                (text, expected, gate.analyse(text, clues, vocabulary, params), clues)
                for text, expected, clues, vocabulary in labelled
            ]
            for threshold in THRESHOLDS:
                at = gate.Params(threshold=threshold, type_penalty=penalty, drop_penalty=drop)
                rates = gate.Rates()
                for text, expected, analysis, clues in analyses:
                    rates.add(text, expected, gate.decide(analysis, clues, at))
                curves.setdefault((penalty, drop), []).append((threshold, rates))
                feasible = rates.false_unlock_rate <= max_false_unlocks
                rank = (feasible, rates.recall, -rates.false_unlock_rate, threshold)
                if best is None or rank > best[0]:
                    best = (rank, at, rates)
            self.stdout.write(
                f"type_penalty {penalty:.2f}, drop_penalty {drop:.2f}: best so far "
                f"{self._line(best)}"
            )
        _rank, params, rates = best
        self.stdout.write(
            f"curve at type_penalty {params.type_penalty:.2f}, "
            f"drop_penalty {params.drop_penalty:.2f}:"
        )
        for threshold, at in curves[params.type_penalty, params.drop_penalty]:
            if abs(threshold - params.threshold) <= 0.05 + 1e-9 and round(threshold * 200) % 2 == 0:
                self.stdout.write(
                    f"  threshold {threshold:.2f}: recall {at.recall:.3f}, "
                    f"false unlocks {at.false_unlock_rate:.3f}"
                )
        self.stdout.write(self.style.SUCCESS(f"chosen: {self._line(best)}"))
        for text in rates.unlocks:
            self.stdout.write(f"  false unlock: {text}")
        held_out = []
        for path in holdout:
            held = gate.measure_items(gate.load_tuning_items(path), params)
            self.stdout.write(
                f"held out ({path.name}): recall {held.recall:.3f} "
                f"({held.opened}/{held.positives}), false unlocks "
                f"{held.false_unlock_rate:.3f} ({held.false_unlocks}/{held.negatives})"
            )
            held_out.append(
                {
                    "data": path.name,
                    "recall": round(held.recall, 4),
                    "false_unlock_rate": round(held.false_unlock_rate, 4),
                }
            )
        if attacks:
            prompts = [p for corpus in gate.attack_corpora(attacks).values() for p in corpus]
            opened = [
                f"{key}: {prompt[:80]}"
                for clues in scenes.values()
                for prompt in prompts
                if (key := gate.match(prompt, clues, gate.vocabulary_of(clues), params).opened)
            ]
            self.stdout.write(
                f"attack prompts: {len(prompts)} to each of {len(scenes)} scenes, "
                f"{len(opened)} opened a clue"
            )
            for line in opened:
                self.stdout.write(f"  UNLOCK {line}")
        if write:
            gate.PARAMS_FILE.write_text(
                json.dumps(
                    {
                        "threshold": params.threshold,
                        "type_penalty": params.type_penalty,
                        "drop_penalty": params.drop_penalty,
                        "recall": round(rates.recall, 4),
                        "false_unlock_rate": round(rates.false_unlock_rate, 4),
                        "max_false_unlocks": max_false_unlocks,
                        "data": data.name,
                        "paraphrases": rates.positives,
                        "near_misses": rates.negatives,
                        "held_out": held_out,
                        "derived_by": "python manage.py tune_gate --write",
                        "derived_at": datetime.now(UTC).date().isoformat(),
                    },
                    indent=1,
                )
                + "\n"
            )
            self.stdout.write(f"wrote {gate.PARAMS_FILE}")

    @staticmethod
    def _line(best) -> str:
        _rank, params, rates = best
        return (
            f"threshold {params.threshold:.3f}, type_penalty {params.type_penalty:.2f}, "
            f"drop_penalty {params.drop_penalty:.2f}: "
            f"recall {rates.recall:.3f} ({rates.opened}/{rates.positives}), false unlocks "
            f"{rates.false_unlock_rate:.3f} ({rates.false_unlocks}/{rates.negatives})"
        )
