"""ENCRYPTION_KEY lists keys newest first; rotate_encryption_key moves every word to the first."""

from __future__ import annotations

import base64
import hashlib
import io

import pytest
from cryptography.fernet import Fernet, InvalidToken
from django.core.management import CommandError, call_command

from avatars.hunt_files import import_hunt_file
from hunt.models import Hunt, SeedWord
from tests.conftest import DEMO_HUNT

pytestmark = pytest.mark.django_db

OLD = Fernet.generate_key().decode()
NEW = Fernet.generate_key().decode()


@pytest.fixture
def hunt(settings) -> Hunt:
    """The demo hunt, its words stored under OLD."""
    settings.ENCRYPTION_KEY = OLD
    return import_hunt_file(DEMO_HUNT)


def tokens(hunt: Hunt) -> dict[int, str]:
    return dict(hunt.words.exclude(word_encrypted="").values_list("position", "word_encrypted"))


def test_a_new_key_in_front_writes_with_it_and_still_reads_the_old_words(hunt, settings):
    words = hunt.guarded_words()
    settings.ENCRYPTION_KEY = f"{NEW},{OLD}"
    assert hunt.guarded_words() == words

    seed = hunt.words.exclude(word_encrypted="").first()
    seed.set_word("cabin")
    assert Fernet(NEW).decrypt(seed.word_encrypted.encode()) == b"cabin"


def test_rotation_moves_every_word_to_the_newest_key(hunt, settings, capsys):
    words = hunt.guarded_words()
    settings.ENCRYPTION_KEY = f"{NEW},{OLD}"
    call_command("rotate_encryption_key")
    out = capsys.readouterr().out
    assert f"{len(words)}/{len(words)} words checked" in out
    assert f"Re-encrypted {len(words)} of {len(words)} guarded words" in out

    settings.ENCRYPTION_KEY = NEW
    assert hunt.guarded_words() == words


def test_running_it_again_changes_nothing(hunt, settings, capsys):
    settings.ENCRYPTION_KEY = f"{NEW},{OLD}"
    call_command("rotate_encryption_key")
    before = tokens(hunt)
    call_command("rotate_encryption_key")
    assert f"Re-encrypted 0 of {len(before)} guarded words" in capsys.readouterr().out
    assert tokens(hunt) == before


def test_words_under_the_former_sha256_derivation_of_a_passphrase_move_too(hunt, settings):
    """Before scrypt, a passphrase was hashed once with SHA-256; such words are read as they
    are and rewritten under the stretched key."""
    words = hunt.guarded_words()
    passphrase = "the operator's old passphrase"
    legacy = Fernet(base64.urlsafe_b64encode(hashlib.sha256(passphrase.encode()).digest()))
    for seed in hunt.words.exclude(word_encrypted=""):
        token = legacy.encrypt(words[seed.position].encode()).decode()
        SeedWord.objects.filter(pk=seed.pk).update(word_encrypted=token)
    settings.ENCRYPTION_KEY = passphrase
    assert hunt.guarded_words() == words

    call_command("rotate_encryption_key")
    assert hunt.guarded_words() == words
    for token in tokens(hunt).values():
        with pytest.raises(InvalidToken):
            legacy.decrypt(token.encode())


def test_a_word_no_key_reads_stops_it_and_nothing_changes(hunt, settings):
    seed = hunt.words.exclude(word_encrypted="").last()
    unknown = Fernet(Fernet.generate_key()).encrypt(b"olive").decode()
    SeedWord.objects.filter(pk=seed.pk).update(word_encrypted=unknown)
    settings.ENCRYPTION_KEY = f"{NEW},{OLD}"
    before = tokens(hunt)
    with pytest.raises(CommandError, match=f"{seed}: .*ENCRYPTION_KEY"):
        call_command("rotate_encryption_key")
    assert tokens(hunt) == before


def test_rotation_seals_conversation_texts_again_under_the_new_key(hunt, settings, make_player):
    from avatars.models import Conversation, Message

    conversation = Conversation.objects.create(
        player=make_player(), avatar=hunt.avatars.first(), summary="- You said: it is agent."
    )
    Message.objects.create(conversation=conversation, role="avatar", text="It is agent, friend.")
    settings.ENCRYPTION_KEY = f"{NEW},{OLD}"
    call_command("rotate_encryption_key", stdout=io.StringIO())
    settings.ENCRYPTION_KEY = NEW  # the old key dropped
    assert Message.objects.get().text == "It is agent, friend."
    assert Conversation.objects.get().summary == "- You said: it is agent."
