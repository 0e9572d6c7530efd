"""Measure the clue gate's verifiers side by side on the sets that were never used to train or
tune anything (holdout2 and the blind sets in hunt/gate_data), and on the attack corpora.

    python manage.py bench_gate [--verifier none cross judge] [--sets blind_demo.json ...]
                                [--per-clue N] [--attacks ../shared] [--json FILE]

For each verifier and set: recall on the first ask, recall within two asks (the player's second
try after the avatar's nudge), false unlocks on realistic near misses, and the latency the
verifier adds to a message (p50/p95, this CPU). "none" is the first stage alone, the baseline.
"""

from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand

from hunt.gate_eval import (
    attack_corpora,
    attack_unlocks,
    blind_scenes,
    load_tuning_items,
    measure_dialogues,
    measure_items,
)
from hunt.management.commands.bench_leaderboard import percentiles
from hunt.matcher import DATA_DIR
from hunt.verifiers import VERIFIERS, verifier_named

BLIND_SETS = ("blind_demo.json", "blind_harbour.json")
DEV_SET = "holdout2.json"  # where the second stage's band and cut were chosen


class Command(BaseCommand):
    help = "Recall, false unlocks and added latency of each gate verifier on the blind sets."

    def add_arguments(self, parser):
        parser.add_argument(
            "--verifier", nargs="+", default=["none", "cross"], choices=["none", *VERIFIERS]
        )
        parser.add_argument(
            "--sets", nargs="+", default=[*BLIND_SETS, DEV_SET], choices=[*BLIND_SETS, DEV_SET]
        )
        parser.add_argument(
            "--per-clue",
            type=int,
            help="only the first N asks and near misses of each clue (a sample, for a slow "
            "verifier such as judge on a CPU)",
        )
        parser.add_argument("--attacks", type=Path, help="the shared folder (attack corpora)")
        parser.add_argument(
            "--uncalibrated",
            action="store_true",
            help="every clue at the default threshold (no per-clue operating points)",
        )
        parser.add_argument("--json", type=Path, dest="json_path", help="write results here")

    def handle(self, *args, verifier: list[str], sets: list[str], attacks: Path | None,
               json_path: Path | None, uncalibrated: bool, per_clue: int | None,
               **options):  # fmt: skip
        results = []
        for name in verifier:
            checker = verifier_named(name)
            if name != "none" and checker is None:
                self.stderr.write(f"{name}: not available (train_gate_verifier?), skipped")
                continue
            for set_name in (s for s in sets if s in BLIND_SETS):
                run = measure_dialogues(
                    blind_set(set_name), checker, calibrated=not uncalibrated, per_clue=per_clue
                )
                added = percentiles(run.added_ms)
                french = run.french
                row = {
                    "verifier": name,
                    "set": set_name,
                    "first_ask": round(run.first.recall, 4),
                    "within_two_asks": round(run.within_two.recall, 4),
                    "false_unlocks": round(run.near.false_unlock_rate, 4),
                    "asks": run.first.positives,
                    "near_misses": run.near.negatives,
                    "french_asks": french.first.positives,
                    "first_ask_french": round(french.first.recall, 4),
                    "within_two_asks_french": round(french.within_two.recall, 4),
                    "french_near_misses": french.near.negatives,
                    "false_unlocks_french": round(french.near.false_unlock_rate, 4),
                    "added_ms_p50": round(added["p50"], 1),
                    "added_ms_p95": round(added["p95"], 1),
                    "missed_first": run.first.misses,
                    "missed_second": run.within_two.misses,
                    "false_unlock_texts": run.near.unlocks,
                }
                results.append(row)
                self.stdout.write(
                    f"{name:<6} {set_name:<20} first ask {row['first_ask']:.3f} "
                    f"({run.first.opened}/{run.first.positives}), within two "
                    f"{row['within_two_asks']:.3f}, false unlocks {row['false_unlocks']:.3f} "
                    f"({run.near.false_unlocks}/{run.near.negatives}), added "
                    f"{row['added_ms_p50']:.1f} / {row['added_ms_p95']:.1f} ms p50/p95"
                )
                self.stdout.write(
                    f"{'':<6} {'  in French':<20} first ask {french.first.opened}/"
                    f"{french.first.positives}, within two {french.within_two.opened}/"
                    f"{french.within_two.positives}, false unlocks {french.near.false_unlocks}/"
                    f"{french.near.negatives}"
                )
            if DEV_SET in sets:
                held = measure_items(load_tuning_items(DATA_DIR / DEV_SET), None, checker)
                self.stdout.write(
                    f"{name:<6} {DEV_SET:<20} recall {held.recall:.3f}, false unlocks "
                    f"{held.false_unlock_rate:.3f}"
                )
                results.append({"verifier": name, "set": DEV_SET,
                                "first_ask": round(held.recall, 4),
                                "false_unlocks": round(held.false_unlock_rate, 4)})  # fmt: skip
            if attacks:
                prompts = [p for corpus in attack_corpora(attacks).values() for p in corpus]
                opened = [
                    f"{set_name} {line}"
                    for set_name in BLIND_SETS
                    for line in attack_unlocks(
                        prompts,
                        blind_scenes(blind_set(set_name), checker, not uncalibrated),
                        verifier=checker,
                    )
                ]
                self.stdout.write(f"{name:<6} attack prompts that opened a clue: {len(opened)}")
                for line in opened:
                    self.stdout.write(f"  UNLOCK {line}")
                results.append({"verifier": name, "set": "attacks", "opened": opened})
        if json_path:
            json_path.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
            self.stdout.write(f"wrote {json_path}")


def blind_set(name: str) -> dict:
    """A blind set of hunt/gate_data: its hunt, and its asks and near misses per clue."""
    return json.loads((DATA_DIR / name).read_text())
