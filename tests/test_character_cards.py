"""Character Card V2 and V3 (avatars/cards.py): the test corpus under tests/data/cards/ imports
into drafts and exports back field for field; malformed cards and images are refused with a
clear message and nothing written."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib

import pytest
from django.core.exceptions import ValidationError
from PIL import Image, PngImagePlugin

from avatars import cards, studio
from avatars.models import Avatar, Portrait
from tests.conftest import ROOT

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_hashing")]

CORPUS = ROOT / "tests" / "data" / "cards"
JSON_CARDS = ["v2_lighthouse.json", "v3_baker.json", "v3_unknown_unicode.json"]
PNG_CARDS = {"v2_lighthouse.png": "chara", "v3_baker.png": "ccv3"}


@pytest.fixture
def creator(make_user):
    user = make_user("maker")
    studio.grant_creator(user)
    return user


def corpus(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


def png_chunks(content: bytes) -> dict[str, dict]:
    """The cards in a PNG's text chunks, decoded, by keyword."""
    image = Image.open(io.BytesIO(content))
    image.load()
    return {k: json.loads(base64.b64decode(v)) for k, v in image.text.items()}


def png_with_chunk(keyword: str, value: str, size=(8, 8)) -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text(keyword, value)
    out = io.BytesIO()
    Image.new("RGB", size, "#123").save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def b64(card) -> str:
    return base64.b64encode(json.dumps(card).encode()).decode()


def png_declaring(width: int, height: int) -> bytes:
    """A PNG of a few dozen bytes whose header declares `width` x `height` pixels: an image
    bomb, if anything decoded it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\0" * 64)
    return (
        cards.PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def v2_card(**data) -> dict:
    card = json.loads(corpus("v2_lighthouse.json"))
    card["data"].update(data)
    return card


# --- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", JSON_CARDS)
def test_it_exports_a_json_card_back_field_for_field(name, creator):
    original = json.loads(corpus(name))
    avatar = studio.do_import_card(creator, corpus(name))
    content, content_type = studio.export_card(
        Avatar.objects.get(pk=avatar.pk), original["spec"], "json"
    )
    assert content_type == "application/json"
    assert json.loads(content) == original


@pytest.mark.parametrize("name,keyword", PNG_CARDS.items())
def test_it_exports_a_png_card_back_field_for_field_with_its_image(name, keyword, creator):
    original = png_chunks(corpus(name))[keyword]
    avatar = studio.do_import_card(creator, corpus(name))
    content, content_type = studio.export_card(
        Avatar.objects.get(pk=avatar.pk), original["spec"], "png"
    )
    assert content_type == "image/png"
    assert png_chunks(content)[keyword] == original
    assert Image.open(io.BytesIO(content)).size == Image.open(io.BytesIO(corpus(name))).size


def test_the_v3_png_export_also_carries_the_v2_card_for_older_tools(creator):
    avatar = studio.do_import_card(creator, corpus("v3_baker.json"))
    content, _type = studio.export_card(avatar, cards.V3, "png")
    chunks = png_chunks(content)
    assert chunks["chara"]["spec"] == cards.V2
    assert chunks["chara"]["data"]["name"] == chunks["ccv3"]["data"]["name"] == "Baker Lin"
    # Read back, the V3 card wins.
    assert cards.read_card(content).extras["spec"] == cards.V3


def test_it_maps_the_card_onto_the_avatars_texts(creator):
    avatar = studio.do_import_card(creator, corpus("v2_lighthouse.json"))
    assert avatar.name == "Keeper Ansel"
    assert avatar.persona == (
        "{{char}} keeps the old lighthouse on the cliff and has seen every storm of forty "
        "winters.\n\nPersonality: gruff, patient, fond of riddles\n\n"
        "Scenario: {{user}} climbs the tower stairs on a foggy evening."
    )
    assert avatar.greeting == "Mind the third step, it creaks. What brings you up my tower?"
    assert avatar.examples.startswith("<START>\n{{user}}: Is the lamp ever dark?")
    assert avatar.card_extras["data"]["character_book"]["entries"][0]["keys"] == ["storm"]
    assert (avatar.hunt, avatar.published, avatar.review) == (None, False, "draft")
    # The model reads the card's placeholders as names.
    assert avatar.prompt_text(avatar.persona).startswith("Keeper Ansel keeps the old lighthouse")
    assert "Visitor climbs the tower" in avatar.prompt_text(avatar.persona)


def test_a_png_cards_image_becomes_a_resized_portrait_without_the_card(creator):
    big = io.BytesIO()
    info = PngImagePlugin.PngInfo()
    info.add_text("chara", b64(v2_card(name="Tall Portrait")))
    Image.new("RGB", (1200, 1600), "#a52").save(big, format="PNG", pnginfo=info)
    avatar = studio.do_import_card(creator, big.getvalue())
    portrait = Image.open(io.BytesIO(Portrait.png_of(avatar.portrait)))
    assert portrait.size == (384, 512)
    portrait.load()
    assert "chara" not in portrait.text


def test_an_edited_draft_exports_its_edits_and_keeps_its_extras(creator):
    avatar = studio.do_import_card(creator, corpus("v3_unknown_unicode.json"))
    form = studio.DraftForm(
        data={
            "name": avatar.name,
            "persona": "Ein neuer Fährmann.\n\nScenario: Nacht am Fluss.",
            "greeting": "Hallo?",
            "examples": "",
            "land": "",
        },
        instance=avatar,
    )
    assert form.is_valid(), form.errors
    studio.do_update_draft(form)
    data = json.loads(studio.export_card(avatar, cards.V3, "json")[0])["data"]
    assert (data["description"], data["personality"], data["scenario"]) == (
        "Ein neuer Fährmann.",
        "",
        "Nacht am Fluss.",
    )
    assert data["first_mes"] == "Hallo?"
    assert data["x_unknown_field"] == {"kept": "verbatim", "list": ["a", "ß"]}
    assert data["extensions"]["some_future_tool"]["nested"][2] == {"deep": "ünïcödé"}


def test_a_v3_card_exported_as_v2_leaves_out_only_what_v2_has_no_place_for(creator):
    original = json.loads(corpus("v3_baker.json"))["data"]
    avatar = studio.do_import_card(creator, corpus("v3_baker.json"))
    v2 = json.loads(studio.export_card(avatar, cards.V2, "json")[0])
    assert (v2["spec"], v2["spec_version"]) == (cards.V2, "2.0")
    assert v2["data"] == {k: v for k, v in original.items() if k not in cards.V3_ONLY}


def test_a_draft_written_in_the_studio_exports_a_complete_v2_card(creator):
    form = studio.DraftForm(data={"name": "Plain", "persona": "A plain guide.", "land": ""})
    assert form.is_valid(), form.errors
    avatar = studio.do_create_draft(creator, form)
    data = json.loads(studio.export_card(avatar, cards.V2, "json")[0])["data"]
    assert set(data) == set(cards.MAPPED) | set(cards.V2_DEFAULTS)
    assert data["description"] == "A plain guide."


def test_an_export_never_holds_the_hunts_words_or_clues(demo_hunt, creator):
    marta = Avatar.objects.get(slug="old-marta")
    marta.owner = creator
    marta.save()
    secrets = [*demo_hunt.guarded_words().values()]
    for clue in marta.clues.all():
        secrets += [*clue.questions, *clue.hints, *clue.examples]
    for spec in (cards.V2, cards.V3):
        text = studio.export_card(marta, spec, "json")[0].decode()
        assert not [s for s in secrets if s.lower() in text.lower()]


# --- refusals ----------------------------------------------------------------------------------


REFUSED = {
    "not a card": (b"just some text", "neither a PNG image nor a JSON card"),
    "wrong spec": (json.dumps({**v2_card(), "spec": "chara_card_v9"}).encode(), "spec must be"),
    "wrong version": (json.dumps({**v2_card(), "spec_version": "3.0"}).encode(), "spec_version"),
    "no data": (json.dumps({"spec": cards.V2, "spec_version": "2.0"}).encode(), "no data object"),
    "missing fields": (
        json.dumps({"spec": cards.V2, "spec_version": "2.0", "data": {"name": "X"}}).encode(),
        "lacks these text fields: description, personality",
    ),
    "empty name": (json.dumps(v2_card(name="  ")).encode(), "name is empty"),
    "huge text": (json.dumps(v2_card(description="x" * 20_001)).encode(), "data.description is"),
    "huge lorebook": (
        json.dumps(v2_card(character_book={"entries": [{"content": "y" * 20_001}]})).encode(),
        "data.character_book.entries",
    ),
    "bad base64": (png_with_chunk("chara", "not*base64!"), "not valid base64"),
    "base64 of junk": (png_with_chunk("ccv3", base64.b64encode(b"\xff\xfe").decode()), "neither"),
    "png without card": (png_with_chunk("Comment", "hello"), "holds no character card"),
    "image bomb": (png_declaring(100_000, 100_000), "at most 4096 on each side"),
    "truncated png": (
        png_with_chunk("chara", b64(v2_card()), size=(300, 300))[:-40],
        "damaged or truncated",
    ),
    "too large": (cards.PNG_SIGNATURE + b"\0" * (cards.MAX_CARD_BYTES + 1), "larger than 8 MB"),
}


@pytest.mark.parametrize("content,message", REFUSED.values(), ids=REFUSED.keys())
def test_a_malformed_card_is_refused_with_a_clear_message_and_nothing_written(
    content, message, creator
):
    with pytest.raises(cards.CardError, match=message):
        studio.do_import_card(creator, content)
    assert not Avatar.objects.exists()


def test_a_card_failing_the_studios_checks_is_refused_and_nothing_written(creator, settings):
    settings.AVATAR_PROMPT_BUDGET = 512  # leaves the persona about 100 tokens
    long = json.dumps(v2_card(description="A keeper of lamps and tides. " * 60)).encode()
    with pytest.raises(ValidationError) as refused:
        studio.do_import_card(creator, long)
    assert "persona is too long" in str(refused.value)
    assert not Avatar.objects.exists()


def test_a_greeting_longer_than_the_avatars_is_refused(creator):
    with pytest.raises(ValidationError, match="at most 300 characters"):
        studio.do_import_card(creator, json.dumps(v2_card(first_mes="Hello! " * 60)).encode())


def test_the_api_refuses_a_malformed_card_with_a_400_and_its_reason(client, creator):
    client.force_login(creator)
    upload = io.BytesIO(png_declaring(8000, 6000))
    upload.name = "bomb.png"
    response = client.post("/api/v1/creator/avatars/import", {"file": upload})
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid",
        "detail": "The image is 8000×6000 pixels; at most 4096 on each side.",
    }
    assert not Avatar.objects.exists()


def test_the_api_imports_a_png_card_into_a_draft(client, creator):
    client.force_login(creator)
    upload = io.BytesIO(corpus("v3_baker.png"))
    upload.name = "baker.png"
    response = client.post("/api/v1/creator/avatars/import", {"file": upload})
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["name"], body["review"], body["published"], body["has_portrait"]) == (
        "Baker Lin of the PNG",
        "draft",
        False,
        True,
    )
    exported = client.get(f"/api/v1/creator/avatars/{body['slug']}/card?spec=v3&format=png")
    assert exported.status_code == 200
    assert png_chunks(exported.content)["ccv3"] == png_chunks(corpus("v3_baker.png"))["ccv3"]


# --- portraits ---------------------------------------------------------------------------------


def image_bytes(fmt: str, size=(64, 64)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, "#357").save(out, format=fmt)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_a_portrait_is_stored_as_a_resized_png(fmt):
    stored = Image.open(io.BytesIO(cards.read_portrait(image_bytes(fmt, (2000, 1000)))))
    assert (stored.format, stored.size) == ("PNG", (512, 256))


def test_a_portrait_of_another_type_is_refused():
    with pytest.raises(cards.CardError, match="PNG or JPEG or WEBP"):
        cards.read_portrait(image_bytes("GIF"))


def test_a_portrait_over_the_size_limit_is_refused_before_it_is_read():
    with pytest.raises(cards.CardError, match="larger than 4 MB"):
        cards.read_portrait(b"\0" * (cards.MAX_IMAGE_BYTES + 1))


def test_a_portrait_declaring_huge_dimensions_is_refused_undecoded():
    with pytest.raises(cards.CardError, match="at most 4096"):
        cards.read_portrait(png_declaring(4097, 10))
