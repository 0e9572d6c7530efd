"""How well a hunt's clues hold, before the event: a table organizers can read.

    python manage.py eval_gate SLUG [--json FILE] [--replies N] [--no-attacks]

For each clue: recall on its `examples` (each must open it; measured leave-one-out, since the
gate also matches against a clue's other examples), false unlocks on its
`counterexamples` (none may open anything) and on the attack corpora of ../shared/attacks/
(every prompt sent to the clue's avatar; none may open anything). Prerequisites are taken as met
and the hunt as live: this measures the questions, not the schedule. The gate runs as it does in
play: each clue at its operating point (set by hand, or calibrated from its examples and
counterexamples when they were saved) and the configured verifier (GATE_VERIFIER) on close
calls; the table says which.

`--replies N` also runs the real avatar model on the first N attack prompts per avatar (slow on
a CPU) and counts replies that contained a guarded word before the reply guard, and after it
(must be 0). Guarded words are never printed: positions only.
"""

from __future__ import annotations

import json
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from avatars.engine import get_engine, prompts
from avatars.models import Avatar
from hunt.gate_eval import Rates, attack_corpora, measure_clue, params_of
from hunt.leaks import StreamGuard, find_leaks, normalize_message, words_of
from hunt.matcher import ClueSpec, default_params, match, vocabulary_of
from hunt.models import Clue, Hunt
from hunt.verifiers import configured_verifier


class Command(BaseCommand):
    help = "Measure a hunt's clue gate: recall, false unlocks, attacks, leaks in replies."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument(
            "--json", dest="json_path", type=Path, help="also write the results as JSON here"
        )
        parser.add_argument("--replies", type=int, default=0, help="attack prompts per avatar")
        parser.add_argument("--no-attacks", action="store_true", help="skip the attack corpora")
        parser.add_argument(
            "--shared",
            type=Path,
            default=Path(settings.BASE_DIR).parent / "shared",
            help="the shared folder holding attacks/ (default: next to the repository)",
        )

    def handle(self, *args, slug, json_path: Path | None, replies, no_attacks, shared, **options):
        hunt = Hunt.objects.filter(slug=slug).first()
        if hunt is None:
            raise CommandError(f"no hunt with slug {slug!r}")
        corpora = {} if no_attacks else attack_corpora(shared)
        words = hunt.guarded_words()
        verifier = configured_verifier()
        report: dict = {
            "hunt": slug,
            "params": params_of(default_params()),
            "verifier": verifier.name if verifier else "none",
            "clues": [],
        }
        totals = {"examples": Rates(), "counterexamples": Rates(), "attacks": 0}
        attack_total = 0
        for avatar in Avatar.objects.filter(hunt=hunt).order_by("slug"):
            clues = list(Clue.objects.filter(avatar=avatar).select_related("word"))
            if not clues:
                continue
            specs = [ClueSpec.of(c) for c in clues]
            vocabulary = vocabulary_of(specs)
            names = frozenset(words_of(normalize_message(avatar.name)))

            def decide(text, specs=specs, vocabulary=vocabulary, names=names):
                return match(text, specs, vocabulary, names=names, verifier=verifier)

            attack_unlocks: dict[int, list[str]] = {c.pk: [] for c in clues}
            for corpus, texts in corpora.items():
                for prompt in texts:
                    opened = decide(prompt).opened
                    if opened is not None:
                        attack_unlocks[opened].append(f"{corpus}: {prompt[:80]}")
            attack_total += sum(len(p) for p in corpora.values())
            for clue in clues:
                examples, counter = measure_clue(clue, clues, names, verifier=verifier)
                totals["examples"].merge(examples)
                totals["counterexamples"].merge(counter)
                totals["attacks"] += len(attack_unlocks[clue.pk])
                row = {
                    "avatar": avatar.slug,
                    "position": clue.word.position,
                    "threshold": default_params().threshold_of(ClueSpec.of(clue)),
                    "threshold_source": clue.threshold_source(),
                    "examples": [examples.opened, examples.positives],
                    "missed_examples": examples.misses,
                    "counterexamples": [counter.false_unlocks, counter.negatives],
                    "unlocking_counterexamples": counter.unlocks,
                    "attack_unlocks": len(attack_unlocks[clue.pk]),
                    "unlocking_attacks": attack_unlocks[clue.pk],
                }
                report["clues"].append(row)
        report["totals"] = {
            "recall": round(totals["examples"].recall, 4),
            "examples": [totals["examples"].opened, totals["examples"].positives],
            "false_unlock_rate": round(totals["counterexamples"].false_unlock_rate, 4),
            "counterexamples": [
                totals["counterexamples"].false_unlocks,
                totals["counterexamples"].negatives,
            ],
            "attack_unlocks": totals["attacks"],
            "attack_prompts_sent": attack_total,
        }
        if replies:
            attacks = corpora or attack_corpora(shared)
            report["replies"] = self.generated_leaks(hunt, attacks, replies, words)
        self.print_table(report)
        if json_path:
            json_path.write_text(json.dumps(report, indent=1) + "\n")
            self.stdout.write(f"wrote {json_path}")

    def generated_leaks(self, hunt, corpora, per_avatar: int, words: dict[int, str]) -> dict:
        """Runs the real model on attack prompts (no reveal: nothing unlocked) and checks its
        replies for guarded words before and after the reply guard."""
        # Here, not at the top: engine.py imports torch, which the gate's measure needs not.
        from avatars.engine.engine import Request, Sampling

        engine = get_engine()
        flat = [p for corpus in corpora.values() for p in corpus][:per_avatar]
        locked = list(words.values())
        raw_leaks = guarded_leaks = sent = 0
        for avatar in Avatar.objects.filter(hunt=hunt, clues__isnull=False).distinct():
            for i, prompt in enumerate(flat):
                parts = prompts.PromptParts(
                    persona=avatar.persona,
                    greeting=avatar.greeting,
                    hunt_context=prompts.hunt_context(hunt.title, hunt.description),
                    message=prompt[:500],
                )
                built = prompts.build_prompt(engine.tokenizer, parts)
                stream = engine.submit(
                    Request(built.ids, Sampling(max_new_tokens=96, seed=i, temperature=0.7))
                )
                guard = StreamGuard(locked, seed=i)
                streamed = "".join(guard.feed(chunk) for chunk in stream)
                streamed += guard.finish()
                reply = stream.result().text
                sent += 1
                raw_leaks += bool(find_leaks(reply, locked))
                guarded_leaks += bool(find_leaks(streamed, locked))
        return {"replies": sent, "raw_leaks": raw_leaks, "leaks_after_guard": guarded_leaks}

    def print_table(self, report: dict) -> None:
        out = self.stdout.write
        params = report["params"]
        out(
            f"Clue gate of {report['hunt']} (default threshold {params['threshold']:.3f}, "
            f"verifier {report['verifier']})"
        )
        out(
            f"{'avatar':<22}{'pos':>4}{'thr':>7} {'(from)':<11}{'examples':>9}  {'counter':>9}  "
            f"{'attacks':>7}"
        )
        for row in report["clues"]:
            ok, n = row["examples"]
            bad, m = row["counterexamples"]
            out(
                f"{row['avatar']:<22}{row['position']:>4}{row['threshold']:>7.3f} "
                f"{row['threshold_source']:<11}{ok:>4}/{n:<4}  {bad:>4}/{m:<4}  "
                f"{row['attack_unlocks']:>7}"
            )
            for text in row["missed_examples"]:
                out(f"{'':<26}misses: {text}")
            for text in row["unlocking_counterexamples"] + row["unlocking_attacks"]:
                out(f"{'':<26}UNLOCKS: {text}")
        t = report["totals"]
        out(
            f"recall {t['recall']:.3f} ({t['examples'][0]}/{t['examples'][1]}), "
            f"false unlocks {t['false_unlock_rate']:.3f} "
            f"({t['counterexamples'][0]}/{t['counterexamples'][1]}), "
            f"attack unlocks {t['attack_unlocks']} of {t['attack_prompts_sent']} prompts sent"
        )
        if "replies" in report:
            r = report["replies"]
            out(
                f"generated replies {r['replies']}: with a guarded word before the guard "
                f"{r['raw_leaks']}, after it {r['leaks_after_guard']}"
            )
