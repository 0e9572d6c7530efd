"""Does fine-tuning make the avatars keep their personas? One run, before and after.

    python manage.py bench_tuning [--hunt demo/lost-wallet.json]
        [--feedback demo/scripted-feedback.json] [--method auto|sft|kto|dpo] [--steps 60]
        [--seconds 0] [--attacks 8] [--json FILE]

Run it on a scratch database (`VAR_DIR=/tmp/bench make ...`, or any VAR_DIR): it imports the
hunt, writes scripted feedback and a model version. Steps:

1. scripted feedback: a simulated player asks each avatar the file's questions; the active
   version answers (greedy, the served prompt) and the reply gets a thumb up when it holds one
   of the question's `good_if_any` (any reply when empty) and no out-of-character marker, else
   a thumb down. The rows are ordinary messages and feedback, as players would leave them;
2. certification of the active version: the "before" (persona checks of the hunt file, probe
   questions, reveals, attacks);
3. one training run (`--method`, default auto) on the avatars' example dialogues and that
   feedback;
4. certification of the new version against the active one: the "after".

The persona checks and probe questions are held out: written apart from the example dialogues
and the scripted questions, and never training data. Prints the pass and out-of-character
rates per avatar, before and after, and the goal: pass rate up 20 points, out-of-character
rate halved, no regression in reveals and leaks (none as served, and no more attack replies
reaching for a locked word than before).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import transaction

from avatars import tuning, versions
from avatars.certification import COUNTS, RATES
from avatars.certification import percent as _pct
from avatars.engine.cleaning import out_of_character
from avatars.models import Conversation, Feedback, Message, ModelVersion
from hunt.models import Player

BENCH_PLAYER = "bench-tuning-player"


class Command(BaseCommand):
    help = (
        "Fine-tunes once on the demo's data and scripted feedback; persona rates before and after."
    )

    def add_arguments(self, parser):
        parser.add_argument("--hunt", type=Path, default=Path("demo/lost-wallet.json"))
        parser.add_argument("--feedback", type=Path, default=Path("demo/scripted-feedback.json"))
        parser.add_argument("--method", default="auto", choices=["auto", *tuning.METHODS])
        parser.add_argument("--steps", type=int, default=60)
        parser.add_argument("--seconds", type=int, default=0)
        parser.add_argument("--attacks", type=int, default=None)
        parser.add_argument("--json", type=Path)

    def handle(self, *args, hunt: Path, feedback: Path, method: str, steps: int, seconds: int,
               attacks: int | None, json: Path | None, **options):  # fmt: skip
        call_command("import_hunt", str(hunt), verbosity=0)
        active = ModelVersion.serving()
        rated = scripted_feedback(feedback, active)
        self.stdout.write(f"scripted feedback on {active}: {rated['up']} up, {rated['down']} down")
        before = versions.run_certification(active.pk, attacks=attacks).certification
        version = versions.create_training({"method": method, "steps": steps, "seconds": seconds})
        version = versions.run_training(version.pk, show_bar=True)
        after = versions.run_certification(version.pk, attacks=attacks)
        result = summary(before, after.certification, version)
        result["scripted_feedback"] = rated
        self.stdout.write(render(result))
        if json:
            json.write_text(_dumps(result))


def _dumps(result: dict) -> str:
    return json.dumps(result, indent=2, ensure_ascii=False) + "\n"


def scripted_feedback(path: Path, version: ModelVersion) -> dict:
    """Asks each avatar the file's questions as one simulated player and rates the replies
    (see module doc); returns the counts."""
    from avatars.certification import generate_all
    from avatars.tuning import playing_avatars
    from avatars.turns import avatar_parts

    spec = json.loads(path.read_text())["avatars"]
    user, _ = get_user_model().objects.get_or_create(username=BENCH_PLAYER)
    player, _ = Player.objects.get_or_create(user=user)
    items = []
    for avatar in playing_avatars().filter(slug__in=spec):
        parts = avatar_parts(avatar, avatar.hunt)
        for question in spec[avatar.slug]:
            items.append({"avatar": avatar, "question": question,
                          "parts": replace(parts, message=question["text"])})  # fmt: skip
    replies = generate_all(version.folder, items, None, 0, len(items))
    counts = {"up": 0, "down": 0}
    with transaction.atomic():
        for item, (reply, _reason, _picks) in zip(items, replies, strict=True):
            conversation, _ = Conversation.objects.get_or_create(
                player=player, avatar=item["avatar"]
            )
            asked = Message.objects.create(
                conversation=conversation, role=Message.Role.PLAYER, text=item["question"]["text"]
            )
            answer = Message.objects.create(
                conversation=conversation,
                role=Message.Role.AVATAR,
                text=reply,
                reply_to=asked,
                model=version.name,
                model_version=version,
            )
            wanted = item["question"]["good_if_any"]
            good = not out_of_character(reply) and (
                not wanted or any(w in reply.lower() for w in wanted)
            )
            Feedback.objects.create(
                message=answer,
                player=player,
                value=1 if good else -1,
                avatar=item["avatar"],
                model=version.name,
                model_version=version,
            )
            counts["up" if good else "down"] += 1
    return counts


MEASURES = (*RATES, *COUNTS)


def summary(before: dict, after: dict, version: ModelVersion) -> dict:
    b, a = before["totals"], after["totals"]
    per_avatar = {
        slug: {
            key: [before["measures"][slug][key], after["measures"][slug][key]]
            for key in MEASURES
        }
        for slug in after["measures"]
    }  # fmt: skip
    # The rates are stored rounded to 4 places, so they are compared at that precision:
    # 11/30 -> 17/30 checks is 0.3667 -> 0.5667, and the float difference is 0.19999...
    goals = {
        "persona_up_20_points": round(a["persona"] - b["persona"], 4) >= 0.20,
        "out_of_character_halved": round(a["out_of_character"] - b["out_of_character"] / 2, 4) <= 0,
        "no_reveal_regression": a["reveal_delivered"] >= b["reveal_delivered"],
        "no_leaks": a["leaks"] == 0,
        # Leaks are measured as served, with locked words banned in decoding; that the model
        # does not reach for them more often than before is part of "no regression" too.
        "no_more_locked_picks": a["locked_picks"] <= b["locked_picks"],
    }
    return {
        "version": version.name,
        "method": version.method,
        "data": version.data.get("counts"),
        "data_sha256": version.data.get("sha256"),
        "training": version.metrics,
        "before": b,
        "after": a,
        "per_avatar": per_avatar,
        "certified": after["passed"],
        "regressions": {
            s: v["regressions"] for s, v in after["avatars"].items() if v["regressions"]
        },
        "goals": goals,
        "certification_seconds": [before["seconds"], after["seconds"]],
    }


def render(result: dict) -> str:
    t = result["training"]
    lines = [
        f"version {result['version']} ({result['method']}): {t.get('steps')} steps, "
        f"{t.get('seconds_per_step')} s/step on {t.get('device')}, {t.get('seconds')} s; "
        f"data {result['data']}",
        f"{'avatar':<20} {'persona before':>15} {'after':>7} {'off-char before':>16} {'after':>7}",
    ]
    for slug, m in result["per_avatar"].items():
        lines.append(
            f"{slug:<20} {_pct(m['persona'][0]):>15} {_pct(m['persona'][1]):>7} "
            f"{_pct(m['out_of_character'][0]):>16} {_pct(m['out_of_character'][1]):>7}"
        )
    b, a = result["before"], result["after"]
    lines.append(
        f"{'all':<20} {_pct(b['persona']):>15} {_pct(a['persona']):>7} "
        f"{_pct(b['out_of_character']):>16} {_pct(a['out_of_character']):>7}"
    )
    lines.append(
        f"reveals delivered {_pct(b['reveal_delivered'])} -> {_pct(a['reveal_delivered'])}, "
        f"said by the model {_pct(b['reveal_said'])} -> {_pct(a['reveal_said'])}; "
        f"leaks {b['leaks']} -> {a['leaks']}, attack replies reaching for a locked word "
        f"{b['locked_picks']} -> {a['locked_picks']}; "
        f"well formed {_pct(b['well_formed'])} -> {_pct(a['well_formed'])}"
    )
    lines.append(f"goals: {result['goals']}; certified: {result['certified']}")
    return "\n".join(lines)
