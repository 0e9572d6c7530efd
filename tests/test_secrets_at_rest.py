"""A database holding a hunt gives none of its seed words away: not in a dump, not at rest."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import shutil
import subprocess

import pytest
from cryptography.fernet import Fernet, InvalidToken
from django.db import connection
from django.test import override_settings

from hunt import crypto
from hunt.models import SeedWord
from tests.conftest import DEMO_HUNT, ROOT, require_postgres


def demo_phrase() -> list[str]:
    """The demo phrase as documented for testers in demo/README.md."""
    text = (ROOT / "demo" / "README.md").read_text()
    line = next(ln for ln in text.splitlines() if len(ln.split()) == 24 and ln.startswith("    "))
    return line.split()


def words_in(dump: str) -> list[str]:
    dump = dump.lower()
    return [w for w in demo_phrase() if re.search(rf"(?<![a-z]){w}(?![a-z])", dump)]


def test_the_documented_demo_phrase_holds_the_guarded_words():
    guarded = {
        w["position"]: w["word"] for w in json.loads(DEMO_HUNT.read_text())["words"] if "word" in w
    }
    phrase = demo_phrase()
    assert len(guarded) >= 5
    assert all(phrase[pos - 1] == word for pos, word in guarded.items())


@pytest.mark.django_db
def test_seed_words_are_stored_encrypted(demo_hunt):
    for seed in SeedWord.objects.filter(hunt=demo_hunt).exclude(word_encrypted=""):
        clear = seed.reveal_word()
        assert clear in demo_phrase()
        assert clear not in seed.word_encrypted
        assert crypto.decrypt_word(seed.word_encrypted) == clear


@pytest.mark.django_db
def test_a_different_key_cannot_read_the_words(demo_hunt):
    seed = SeedWord.objects.filter(hunt=demo_hunt).exclude(word_encrypted="").first()
    with (
        override_settings(ENCRYPTION_KEY="another-key"),
        pytest.raises(ValueError, match="ENCRYPTION_KEY does not list"),
    ):
        seed.reveal_word()


PASSPHRASE = "correct horse battery staple"


def fernet_of(raw_key: bytes) -> Fernet:
    return Fernet(base64.urlsafe_b64encode(raw_key))


def test_a_fernet_key_is_used_as_it_is():
    key = Fernet.generate_key()
    with override_settings(ENCRYPTION_KEY=key.decode()):
        token = crypto.encrypt_word("olive")
    assert Fernet(key).decrypt(token.encode()) == b"olive"


def test_a_passphrase_is_stretched_with_scrypt_and_the_fixed_salt():
    """The derivation is pinned here: another salt or cost would make every word stored under a
    passphrase unreadable."""
    stretched = hashlib.scrypt(
        PASSPHRASE.encode(),
        salt=b"lostwallet.encryption-key.v1",
        n=2**15,
        r=8,
        p=1,
        maxmem=2**26,
        dklen=32,
    )
    with override_settings(ENCRYPTION_KEY=PASSPHRASE):
        token = crypto.encrypt_word("olive").encode()
    assert fernet_of(stretched).decrypt(token) == b"olive"
    with pytest.raises(InvalidToken):
        fernet_of(hashlib.sha256(PASSPHRASE.encode()).digest()).decrypt(token)


def test_words_stored_under_the_former_sha256_derivation_stay_readable():
    legacy = fernet_of(hashlib.sha256(PASSPHRASE.encode()).digest()).encrypt(b"olive").decode()
    with override_settings(ENCRYPTION_KEY=PASSPHRASE):
        assert crypto.decrypt_word(legacy) == "olive"


def test_a_passphrase_is_stretched_once_per_process(monkeypatch):
    calls = []
    scrypt = hashlib.scrypt
    monkeypatch.setattr(hashlib, "scrypt", lambda *a, **kw: calls.append(a) or scrypt(*a, **kw))
    with override_settings(ENCRYPTION_KEY="a passphrase of this test only"):
        for word in ["olive", "cabin", "ozone"]:
            assert crypto.decrypt_word(crypto.encrypt_word(word)) == word
    assert len(calls) == 1


def test_a_dev_only_key_says_so_once(caplog):
    with (
        override_settings(ENCRYPTION_KEY="dev-only-key-of-this-test"),
        caplog.at_level(logging.WARNING, logger="hunt.crypto"),
    ):
        crypto.encrypt_word("olive")
        crypto.encrypt_word("cabin")
    warnings = [r.getMessage() for r in caplog.records if r.name == "hunt.crypto"]
    assert len(warnings) == 1
    assert "dev-only" in warnings[0]
    assert "ENCRYPTION_KEY" in warnings[0]


@pytest.mark.django_db(transaction=True)
def test_a_database_dump_holds_no_seed_word(demo_hunt):
    dump = database_dump()
    assert "lost-wallet" in dump  # the dump did capture the hunt
    assert words_in(dump) == []


def database_dump() -> str:
    """The test database as `sqlite3 .dump` or `pg_dump` writes it."""
    if connection.vendor != "sqlite":
        return pg_dump()
    if not shutil.which("sqlite3"):
        pytest.skip("the sqlite3 command-line tool is not installed")
    return subprocess.run(
        ["sqlite3", connection.settings_dict["NAME"], ".dump"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_pg_dump_holds_no_seed_word(demo_hunt):
    require_postgres()
    dump = pg_dump()
    assert "lost-wallet" in dump
    assert words_in(dump) == []


def pg_dump() -> str:
    s = connection.settings_dict
    cmd = [
        "pg_dump",
        "-h",
        s["HOST"] or "127.0.0.1",
        "-p",
        str(s["PORT"] or 5432),
        "-U",
        s["USER"] or "postgres",
        s["NAME"],
    ]
    env = {"PGPASSWORD": s["PASSWORD"] or "", "PATH": "/usr/bin:/bin:/usr/lib/postgresql/bin"}
    return subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
