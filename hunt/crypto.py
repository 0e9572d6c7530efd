"""The one place where guarded seed words are encrypted and decrypted.

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
