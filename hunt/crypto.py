"""The one place where guarded seed words, and the conversation texts that may hold them, are
encrypted and decrypted.

Seed words control a real wallet, so they are stored only as Fernet tokens keyed by
settings.ENCRYPTION_KEY: a database dump or backup reveals nothing. Decrypted words live in
memory only for the gate, the reply guard, the admin (superusers) and export_hunt. They are
never put into a prompt before the gate opens for that player, never logged, and never sent in
a frame or REST answer to a player who has not discovered them: a model leaks whatever sits in
its context, so the only safe secret is one it has never seen.

ENCRYPTION_KEY lists keys newest first: the first encrypts, any decrypts (MultiFernet), so an
operator puts a new key in front, restarts every process, runs `rotate_encryption_key` (which
moves each stored word to the first key) and then drops the old one (docs/security.md). A Fernet
key is used as it is; a passphrase is stretched with scrypt, once per process. Words stored
before scrypt came in, under a passphrase hashed once with SHA-256, stay readable through that
derivation, which only ever decrypts, until `rotate_encryption_key` rewrites them.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.db import models

logger = logging.getLogger(__name__)

# scrypt makes each guess at a passphrase from a stolen database cost 32 MiB and 0.1 to 0.5 s. The
# salt belongs to the application, not to the install: changing it would make every word stored
# under a passphrase unreadable, and a per-install salt would be one more value operators must
# keep beside the key and could lose. It still makes tables precomputed for other software
# useless; against an attacker who targets Lost Wallet only the passphrase's own strength counts,
# so docs/security.md recommends a random Fernet key, which needs no stretching at all.
SALT = b"lostwallet.encryption-key.v1"


def _stretch(passphrase: str) -> bytes:
    if passphrase.startswith("dev-only-"):
        logger.warning(
            "Guarded words are encrypted with a dev-only key derived from SECRET_KEY "
            "(DEBUG=1 without ENCRYPTION_KEY): never store a real wallet's words under it."
        )
    raw = hashlib.scrypt(passphrase.encode(), salt=SALT, n=2**15, r=8, p=1, maxmem=2**26, dklen=32)
    return base64.urlsafe_b64encode(raw)


@cache
def _fernets(keys: str) -> tuple[Fernet, ...]:
    """The keys of `keys` (comma-separated, newest first), then the former SHA-256 derivation of
    each passphrase among them: last in the list, so it never encrypts."""
    current, former = [], []
    for key in keys.split(","):
        try:
            current.append(Fernet(key.encode()))
        except ValueError:  # not a Fernet key: a passphrase
            current.append(Fernet(_stretch(key)))
            former.append(Fernet(base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest())))
    return (*current, *former)


def _unreadable() -> ValueError:
    return ValueError(
        "A guarded word cannot be decrypted: ENCRYPTION_KEY does not list the key it was stored "
        "with."
    )


def encrypt_word(word: str) -> str:
    return _fernets(settings.ENCRYPTION_KEY)[0].encrypt(word.encode()).decode()


def decrypt_word(token: str) -> str:
    try:
        return MultiFernet(_fernets(settings.ENCRYPTION_KEY)).decrypt(token.encode()).decode()
    except InvalidToken:
        raise _unreadable() from None


def reencrypt(token: str) -> str:
    """`token` under the newest key: the same token when it already is, so that a second
    rotation changes nothing."""
    fernets = _fernets(settings.ENCRYPTION_KEY)
    try:
        fernets[0].decrypt(token.encode())
    except InvalidToken:
        try:
            return MultiFernet(fernets).rotate(token.encode()).decode()
        except InvalidToken:
            raise _unreadable() from None
    return token


# Conversation texts -------------------------------------------------------------------------------

# A reveal turn's reply holds the word, and the rolling summary quotes it: such texts are sealed
# too, so a played database gives no word away either. Sealed, a text is stored as SEALED then the
# Fernet token's bytes in hex: hex holds only the letters a to f, so a word with any other letter
# never shows in a dump by chance (a base64 token holds short words at random). The leak
# detector's hex decoder, which reads random bytes as text, may still find a short word there.
SEALED = "sealed:"


def seal_text(text: str) -> str:
    token = _fernets(settings.ENCRYPTION_KEY)[0].encrypt(text.encode())
    return SEALED + base64.urlsafe_b64decode(token).hex()


def _token(stored: str) -> bytes:
    """The Fernet token of a sealed text (seal_text's inverse encoding)."""
    return base64.urlsafe_b64encode(bytes.fromhex(stored.removeprefix(SEALED)))


def open_text(stored: str) -> str:
    """The clear text of a sealed one; a text stored before sealing came in is returned as is."""
    if not stored.startswith(SEALED):
        return stored
    try:
        return MultiFernet(_fernets(settings.ENCRYPTION_KEY)).decrypt(_token(stored)).decode()
    except InvalidToken:
        raise _unreadable() from None


def sealed_under_newest(stored: str) -> bool:
    """Whether a stored text needs no rotation: empty, or sealed with the newest key."""
    if not stored:
        return True
    if not stored.startswith(SEALED):
        return False  # stored before sealing came in: to be sealed
    try:
        _fernets(settings.ENCRYPTION_KEY)[0].decrypt(_token(stored))
    except InvalidToken:
        return False
    return True


class SealedTextField(models.TextField):
    """A TextField stored sealed (see seal_text) and read in clear. It cannot be searched or
    compared in a query: each sealing of the same text differs."""

    def from_db_value(self, value, expression, connection):
        return open_text(value) if value else value

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        return seal_text(value) if value else value
