"""The BIP39 English wordlist and checksum, and the canonical form of a phrase."""

from __future__ import annotations

from functools import cache


@cache
def bip39_words() -> frozenset[str]:
    from mnemonic import Mnemonic

    return frozenset(Mnemonic("english").wordlist)


def bip39_checksum_ok(words: list[str]) -> bool:
    from mnemonic import Mnemonic

    return Mnemonic("english").check(" ".join(words))


def phrase_of(words: list[str]) -> str:
    """The canonical phrase that `phrase_hash` hashes: lower case, single spaces."""
    return " ".join(w.strip().lower() for w in words)
