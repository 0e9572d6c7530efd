"""Re-derives the clue gate's default threshold from its tuning set.

    python manage.py tune_gate [--data FILE] [--holdout FILE ...] [--max-false-unlocks 0.02]
                               [--write] [--attacks ../shared] [--without CHECK ... | each]

Each item of the set is a clue; items of one `scene` form one avatar. Every paraphrase must open
its own clue, every near miss must open nothing. For each question-kind penalty, penalty for
anchors with a word left out (hunt.questions.anchors_of) and threshold, the command measures
recall and the false-unlock rate with the gate's own matcher, and picks the parameters with the
best recall whose false-unlock rate stays within the limit (on a tie: fewer false unlocks, then
the higher threshold). `--write` stores it in hunt/gate_data/params.json.

The chosen parameters are then measured on the held-out sets (hunt/gate_data/holdout.json and
holdout2.json: other scenes, written apart from the tuning set and never used to choose): the
numbers to expect on a hunt the gate has never seen.

`--without CHECK` measures instead what one check of the matcher earns (hunt/matcher.py,
CHECKS): recall and false unlocks on every set at the tuned parameters, with all checks on, then
with each named check switched off (`each`: every check in turn). Nothing is tuned or written.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from django.core.management.base import BaseCommand

from hunt.gate_eval import (
    Rates,
    attack_corpora,
    attack_unlocks,
    item_scenes,
    labelled_texts,
    load_tuning_items,
    measure_items,
    params_of,
)
from hunt.matcher import (
    CHECKS,
    DATA_DIR,
    PARAMS_FILE,
    analyse,
    decide,
    default_params,
)

PENALTIES = (0.05, 0.1, 0.15, 0.2)
DROP_PENALTIES = (0.02, 0.03, 0.04, 0.05)
THRESHOLDS = tuple(round(t, 3) for t in np.arange(0.6, 0.951, 0.005))


class Command(BaseCommand):
    help = "Derive the clue gate's default threshold from its tuning set."

    def add_arguments(self, parser):
        parser.add_argument("--data", type=Path, default=DATA_DIR / "tuning.json")
        parser.add_argument(
            "--holdout",
            type=Path,
            nargs="+",
            default=[DATA_DIR / "holdout.json", DATA_DIR / "holdout2.json"],
        )
        parser.add_argument("--max-false-unlocks", type=float, default=0.02)
        parser.add_argument("--write", action="store_true", help="update params.json")
        parser.add_argument(
            "--attacks",
            type=Path,
            metavar="SHARED",
            help="also send the attack corpora of SHARED/attacks/ to every scene (none may open)",
        )
        parser.add_argument(
            "--without",
            nargs="+",
            metavar="CHECK",
            choices=[*(c.name for c in CHECKS), "each"],
            help="measure the tuned gate with each of these checks switched off ('each': all)",
        )

    def handle(
        self, *args, data: Path, holdout: list[Path], max_false_unlocks: float, write: bool,
        attacks, without, **options,
    ):  # fmt: skip
        if without:
            self.measure_checks(data, holdout, attacks, without)
            return
        items = load_tuning_items(data)
        tuned = default_params()
        # Avatars for the attack prompts: each scene's clues; the items name no avatar.
        scenes = [(clues, frozenset()) for clues in item_scenes(items).values()]
        labelled = list(labelled_texts(items))
        best = None
        curves: dict[tuple[float, float], list[tuple[float, Rates]]] = {}
        for penalty, drop in itertools.product(PENALTIES, DROP_PENALTIES):
            # The first stage alone is tuned here; the verifier's band is kept as it is.
            params = replace(tuned, threshold=0.0, type_penalty=penalty, drop_penalty=drop)
            analyses = [
                (text, expected, analyse(text, clues, vocabulary, params), clues)
                for text, expected, clues, vocabulary in labelled
            ]
            for threshold in THRESHOLDS:
                at = replace(params, threshold=threshold)
                rates = Rates()
                for text, expected, analysis, clues in analyses:
                    rates.add(text, expected, decide(analysis, clues, at))
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
            held = measure_items(load_tuning_items(path), params)
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
            prompts = [p for corpus in attack_corpora(attacks).values() for p in corpus]
            opened = attack_unlocks(prompts, scenes, params)
            self.stdout.write(
                f"attack prompts: {len(prompts)} to each of {len(scenes)} scenes, "
                f"{len(opened)} opened a clue"
            )
            for line in opened:
                self.stdout.write(f"  UNLOCK {line}")
        if write:
            PARAMS_FILE.write_text(
                json.dumps(
                    {
                        **params_of(params),
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
            self.stdout.write(f"wrote {PARAMS_FILE}")

    def measure_checks(self, data: Path, holdout: list[Path], attacks, without: list[str]):
        """One row with every check on, then one per check switched off: recall and false
        unlocks on each set (and attack prompts that open a clue, with --attacks)."""
        names = [c.name for c in CHECKS] if "each" in without else without
        sets = {path.name: load_tuning_items(path) for path in [data, *holdout]}
        prompts = (
            [p for corpus in attack_corpora(attacks).values() for p in corpus] if attacks else []
        )
        scenes = [(clues, frozenset()) for clues in item_scenes(sets[data.name]).values()]
        tuned = default_params()
        header = "".join(f"{name:>26}" for name in sets) + ("   attacks" if attacks else "")
        self.stdout.write(f"{'switched off':<18}{header}")
        self.stdout.write(f"{'':<18}" + f"{'recall / false unlocks':>26}" * len(sets))
        for name in [None, *names]:
            params = replace(tuned, without=frozenset([name])) if name else tuned
            cells = ""
            for items in sets.values():
                rates = measure_items(items, params)
                cells += f"{rates.recall:>17.3f} / {rates.false_unlock_rate:.3f}"
            if attacks:
                cells += f"{len(attack_unlocks(prompts, scenes, params)):>10}"
            self.stdout.write(f"{name or '(none)':<18}{cells}")

    @staticmethod
    def _line(best) -> str:
        _rank, params, rates = best
        return (
            f"threshold {params.threshold:.3f}, type_penalty {params.type_penalty:.2f}, "
            f"drop_penalty {params.drop_penalty:.2f}: "
            f"recall {rates.recall:.3f} ({rates.opened}/{rates.positives}), false unlocks "
            f"{rates.false_unlock_rate:.3f} ({rates.false_unlocks}/{rates.negatives})"
        )
