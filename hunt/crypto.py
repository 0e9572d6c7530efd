"""The one place where guarded seed words are encrypted and decrypted.

Seed words control a real wallet, so they are stored only as Fernet tokens keyed by
settings.ENCRYPTION_KEY: a database dump or backup reveals nothing. Decrypted words live in
memory only for the gate, the reply guard, the admin (superusers) and export_hunt. They are
never put into a prompt before the gate opens for that player, never logged, and never sent in
a frame or REST answer to a player who has not discovered them: a model leaks whatever sits in
its context, so the only safe secret is one it has never seen.
"""

from __future__ import annotations

import base64
import hashlib
from functools import cache

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings


@cache
def _fernet(key: str) -> Fernet:
    try:
        return Fernet(key.encode())
    except ValueError:
        # Any passphrase works too: derive a proper 32-byte key from it.
        return Fernet(base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest()))


def encrypt_word(word: str) -> str:
    return _fernet(settings.ENCRYPTION_KEY).encrypt(word.encode()).decode()


def decrypt_word(token: str) -> str:
    try:
        return _fernet(settings.ENCRYPTION_KEY).decrypt(token.encode()).decode()
    except InvalidToken:
        raise ValueError(
            "A guarded word cannot be decrypted: ENCRYPTION_KEY differs from the key it was "
            "stored with."
        ) from None
