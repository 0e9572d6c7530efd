"""The UI in French: language negotiation, the switcher, translated pages, a complete catalog."""

from __future__ import annotations

import ast
import gettext
import re

import pytest

from tests.conftest import ROOT
from tests.hunt_helpers import discover, find_every_word

pytestmark = pytest.mark.usefixtures("fast_hashing")

PO = ROOT / "locale" / "fr" / "LC_MESSAGES" / "django.po"
MO = PO.with_suffix(".mo")


@pytest.mark.django_db
def test_the_home_page_speaks_french_to_a_french_browser(client, demo_hunt):
    response = client.get("/", HTTP_ACCEPT_LANGUAGE="fr-FR,fr;q=0.9,en;q=0.5")
    html = response.content.decode()
    assert '<html lang="fr">' in html
    assert "Trouvez les 24 mots. Ouvrez le portefeuille." in html
    assert "Se connecter" in html and "en cours" in html
    assert "Find the 24 words" not in html


@pytest.mark.django_db
def test_english_stays_the_default(client, demo_hunt):
    html = client.get("/", HTTP_ACCEPT_LANGUAGE="de").content.decode()
    assert '<html lang="en">' in html and "Find the 24 words" in html


@pytest.mark.django_db
def test_the_switcher_sets_the_language_for_the_next_pages(client, demo_hunt):
    response = client.post("/i18n/setlang/", {"language": "fr", "next": "/"})
    assert response.status_code == 302
    html = client.get(f"/hunts/{demo_hunt.slug}/leaderboard/").content.decode()
    assert "Classement — The Lost Wallet" in html
    assert "Personne n’a encore trouvé de mot." in html


@pytest.mark.django_db
def test_the_players_pages_render_in_french(client, demo_hunt, make_player, settings):
    player = make_player("joueur")
    discover(player, demo_hunt, 3)
    client.force_login(player.user)
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = "fr"
    pages = {
        "": ["1 mots trouvés sur 24", "Rendez visite à", "Ma progression"],
        "avatars/": ["Où vivent les avatars", "Parler à Old Marta", "Terrain"],
        "claim/": ["Réclamer le portefeuille", "Saisissez les 24 mots"],
    }
    for path, expected in pages.items():
        html = client.get(f"/hunts/{demo_hunt.slug}/{path}").content.decode()
        assert [e for e in expected if e not in html] == [], path


@pytest.mark.django_db
def test_claim_errors_are_translated(client, demo_hunt, make_player, settings):
    client.force_login(find_every_word(make_player(), demo_hunt).user)
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = "fr"
    response = client.post(f"/hunts/{demo_hunt.slug}/claim/", {"phrase": "olive nut"})
    html = response.content.decode()
    assert "Ce n’est pas une phrase de récupération valide. 24 mots attendus, 2 reçus." in html
    assert "Vous pourrez réclamer à nouveau dans 60 secondes." in html


@pytest.mark.django_db
def test_sign_up_renders_in_french(client, demo_hunt):
    html = client.get("/accounts/signup/", HTTP_ACCEPT_LANGUAGE="fr").content.decode()
    assert "Créez votre compte" in html and "Nom d’utilisateur" in html


def _po_entries() -> list[tuple[str, list[str], bool]]:
    """(msgid, msgstrs, fuzzy) for every entry of the French catalog except the header."""
    entries = []
    for block in PO.read_text(encoding="utf-8").split("\n\n"):
        fields: dict[str, str] = {}
        current = None
        for line in block.splitlines():
            match = re.match(r'^(msgid|msgid_plural|msgstr(?:\[\d\])?|msgctxt) (".*")$', line)
            if match:
                current = match.group(1)
                fields[current] = ast.literal_eval(match.group(2))
            elif line.startswith('"') and current:
                fields[current] += ast.literal_eval(line)
        if fields.get("msgid"):
            strs = [v for k, v in fields.items() if k.startswith("msgstr")]
            entries.append((fields["msgid"], strs, "#, fuzzy" in block or ", fuzzy" in block))
    return entries


def test_every_french_message_is_translated():
    entries = _po_entries()
    assert len(entries) > 150
    assert [m for m, strs, fuzzy in entries if fuzzy or not all(strs)] == []


def test_the_compiled_catalog_matches_the_sources():
    with MO.open("rb") as fp:
        catalog = gettext.GNUTranslations(fp)
    for msgid, strs, _fuzzy in _po_entries():
        assert catalog.gettext(msgid) == strs[0], msgid
    assert catalog.info()["plural-forms"] == "nplurals=2; plural=(n > 1);"
