"""Streaming reply clean-up: what is streamed is what is stored, and no markup, echo of the
instructions, invented turn or runaway length reaches the player."""

from __future__ import annotations

from avatars.engine.cleaning import ELLIPSIS, ReplyCleaner

PERSONA = (
    "You are Old Marta, the keeper of a lighthouse on a windy cliff. You love storms, strong "
    "tea and your cat Barnacle."
)


def run(cleaner: ReplyCleaner, text: str, complete: bool = True, size: int = 3) -> tuple[list, str]:
    """Feeds `text` in small chunks like a token stream; returns (streamed pieces, reply)."""
    pieces = [cleaner.feed(text[i : i + size]) for i in range(0, len(text), size)]
    pieces.append(cleaner.finish(complete=complete))
    streamed = [p for p in pieces if p]
    return streamed, "".join(streamed)


def test_the_streamed_pieces_are_the_reply_and_nothing_is_lost():
    text = "Steady now, stranger. The light has burned for fifty years and it will burn tonight."
    streamed, reply = run(ReplyCleaner(echo_sources=[PERSONA]), text)
    assert reply == text
    assert len(streamed) > 3  # it streams; it does not wait for the end


def test_the_last_words_are_held_back_until_the_end():
    cleaner = ReplyCleaner()
    sent = cleaner.feed("one two three four five six seven eight nine ten")
    # Seven words stay behind: a six-word echo that completes with the last word is unsent.
    assert sent == "one two three"
    assert cleaner.finish(complete=True) == " four five six seven eight nine ten"


def test_leading_space_and_a_speaker_label_are_dropped():
    _streamed, reply = run(ReplyCleaner(names=["Old Marta", "Marta"]), "  Old Marta: Ahoy there.")
    assert reply == "Ahoy there."


def test_a_recited_persona_is_cut_before_the_player_sees_it():
    text = "Ahoy there, friend! You are Old Marta, the keeper of a lighthouse on a windy cliff."
    cleaner = ReplyCleaner(echo_sources=[PERSONA])
    streamed, reply = run(cleaner, text, complete=False)
    assert reply == "Ahoy there, friend!"
    assert "Marta" not in "".join(streamed)
    assert cleaner.stop


def test_the_character_may_restate_its_persona_in_its_own_voice():
    text = "I am the keeper of a lighthouse on a windy cliff, and I love storms and strong tea."
    _streamed, reply = run(ReplyCleaner(echo_sources=[PERSONA]), text)
    assert reply == text


def test_reciting_the_answering_rules_is_cut_even_without_a_you():
    rules = "Stay in character. Answer in one to three short sentences."
    text = "Steady now. Stay in character. Answer in one to three short sentences. Bye."
    _streamed, reply = run(ReplyCleaner(instructions=[rules]), text, complete=False)
    assert reply == "Steady now."


def test_a_recital_already_partly_sent_ends_with_an_ellipsis():
    text = "Ahoy! I am here and you are Old Marta, the keeper of a lighthouse."
    _streamed, reply = run(ReplyCleaner(echo_sources=[PERSONA]), text, complete=False)
    assert reply.endswith(ELLIPSIS)
    assert "Marta" not in reply


def test_the_greeting_and_a_reveal_line_may_be_said_word_for_word():
    line = "Every night I feed that old lamp the same way, and there's one word for it."
    _streamed, reply = run(ReplyCleaner(echo_sources=[PERSONA]), line)
    assert reply == line


def test_an_invented_next_turn_is_cut():
    text = "The tea is hot. Sit down.\nUser: thanks! what else?\nassistant: more tea"
    cleaner = ReplyCleaner()
    _streamed, reply = run(cleaner, text, complete=False)
    assert reply == "The tea is hot. Sit down."
    assert cleaner.stop


def test_spelled_out_chat_markup_is_cut():
    _streamed, reply = run(ReplyCleaner(), "Fine weather.<|im_end|> <|im_start|>user", False)
    assert reply == "Fine weather."


def test_past_the_soft_limit_the_reply_ends_at_the_next_sentence_end():
    text = "The sea is grey today. " * 30
    cleaner = ReplyCleaner(soft_chars=100, max_chars=400)
    _streamed, reply = run(cleaner, text, complete=False)
    assert 100 <= len(reply) < 130
    assert reply.endswith("today.")
    assert cleaner.stop


def test_a_length_cut_ends_at_the_last_unsent_sentence_end():
    text = "The tide turns soon and the boats come back in. Mind the rocks and"
    _streamed, reply = run(ReplyCleaner(), text, complete=False)
    assert reply == "The tide turns soon and the boats come back in."


def test_a_cut_with_no_sentence_end_left_is_marked_with_an_ellipsis():
    text = "well you see the thing about the lamp is that it needs care every single night and"
    _streamed, reply = run(ReplyCleaner(), text, complete=False)
    assert reply.endswith(ELLIPSIS)
    assert reply.startswith("well you see")


def test_a_reply_the_model_ended_itself_stands_as_written():
    _streamed, reply = run(ReplyCleaner(), "Ahoy there, friend", complete=True)
    assert reply == "Ahoy there, friend"


def test_the_hard_cap_bounds_a_reply_without_punctuation():
    cleaner = ReplyCleaner(soft_chars=50, max_chars=120)
    _streamed, reply = run(cleaner, "la " * 200, complete=False)
    assert len(reply) <= 121
    assert cleaner.stop


def test_an_empty_reply_becomes_an_ellipsis():
    _streamed, reply = run(ReplyCleaner(), "   ", complete=True)
    assert reply == ELLIPSIS
