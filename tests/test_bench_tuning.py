"""The fine-tuning benchmark's verdict on its goals."""

from avatars.management.commands.bench_tuning import summary
from avatars.models import ModelVersion


def _measured(persona, out_of_character, leaks=0, locked_picks=0):
    totals = {
        "persona": persona,
        "out_of_character": out_of_character,
        "well_formed": 1.0,
        "reveal_delivered": 1.0,
        "reveal_said": 0.5,
        "leaks": leaks,
        "locked_picks": locked_picks,
    }
    return {"totals": totals, "measures": {}, "avatars": {}, "passed": not leaks, "seconds": 1}


def _goals(before, after):
    version = ModelVersion(name="v", method="sft", data={}, metrics={})
    return summary(before, after, version)["goals"]


def test_a_rise_of_exactly_twenty_points_reaches_the_persona_goal():
    # 11/30 -> 17/30 checks, as the certification stores them (rounded to 4 places).
    goals = _goals(_measured(0.3667, 0.1572), _measured(0.5667, 0.0786))
    assert goals["persona_up_20_points"]
    assert goals["out_of_character_halved"]


def test_a_rise_just_short_of_twenty_points_misses_it():
    goals = _goals(_measured(0.3667, 0.1572), _measured(0.5666, 0.0787))
    assert not goals["persona_up_20_points"]
    assert not goals["out_of_character_halved"]


def test_a_model_reaching_for_locked_words_more_often_regresses_even_with_nothing_leaked():
    goals = _goals(_measured(0.3667, 0.1572), _measured(0.5667, 0.0786, locked_picks=1))
    assert goals["no_leaks"] and not goals["no_more_locked_picks"]
    assert _goals(_measured(0.3, 0.1, locked_picks=1), _measured(0.5, 0.05))["no_more_locked_picks"]
