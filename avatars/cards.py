"""Character Card V2 and V3: the open formats of SillyTavern and other character tools.

A card is JSON: `{"spec": "chara_card_v2", "spec_version": "2.0", "data": {...}}` (V3:
`chara_card_v3`, `3.0`, with a few more fields), as a `.json` file or embedded in a PNG as a
`tEXt` chunk holding the base64 of the UTF-8 JSON (keyword `chara` for V2, `ccv3` for V3; a
PNG with both is read as V3, as the V3 spec asks).

Mapping: `name` is the name; `description`, `personality` and `scenario` make the persona
(the last two as "Personality: " and "Scenario: " paragraphs, which export splits off again);
`first_mes` is the greeting; `mes_example` the example dialogues. Every other field of `data`
(lorebook, alternate greetings, extensions, V3 assets, fields of tools we do not know) is kept
verbatim in `card_extras`, so a card imported then exported in its own version comes back
field for field. Fields of the root besides `spec`, `spec_version` and `data` are the legacy
V1 mirror of `data` and are not kept: `data` is canonical in both specs.

No guarded word or clue can travel through a card: a card maps to the avatar's public texts
and its extras only, clues live in another table that this module never reads, and a draft
belongs to no hunt (guarded words are checked when an organizer publishes it into one).

Everything here is pure (bytes in, values out) and refuses bad input with `CardError`, whose
message is for the creator, before anything is written. Images are checked before they are
decoded: file size, then the dimensions the header declares (an image bomb declares huge ones
in a few bytes), then the decode itself.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from dataclasses import dataclass, field

from PIL import Image, PngImagePlugin, UnidentifiedImageError

V2 = "chara_card_v2"
V3 = "chara_card_v3"
SPEC_VERSIONS = {V2: "2.0", V3: "3.0"}
PNG_KEYWORDS = {V2: "chara", V3: "ccv3"}
SPEC_NAMES = {"v2": V2, "v3": V3}

MAPPED = ("name", "description", "personality", "scenario", "first_mes", "mes_example")
# Fields the V2 spec requires beside the mapped ones; export writes their empty values when a
# card never had them (a draft written in the studio).
V2_DEFAULTS = {
    "creator_notes": "",
    "system_prompt": "",
    "post_history_instructions": "",
    "alternate_greetings": [],
    "character_book": None,
    "tags": [],
    "creator": "",
    "character_version": "",
    "extensions": {},
}
V3_DEFAULTS = {"group_only_greetings": []}
# V3 fields that a V2 card has no place for: a V3 card exported as V2 leaves them out.
V3_ONLY = (
    "assets",
    "nickname",
    "creator_notes_multilingual",
    "source",
    "group_only_greetings",
    "creation_date",
    "modification_date",
)
PERSONALITY = "Personality: "
SCENARIO = "Scenario: "

MAX_CARD_BYTES = 8 * 1024 * 1024  # a card PNG, portrait included
MAX_JSON_BYTES = 1024 * 1024  # the card's JSON, in a file or a chunk
MAX_FIELD_CHARS = 20_000  # any one text of a card
MAX_IMAGE_BYTES = 4 * 1024 * 1024  # a portrait upload
MAX_IMAGE_SIDE = 4096
PORTRAIT_SIDE = 512
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class CardError(ValueError):
    """A card or image refused; the message says why, for the creator."""


@dataclass
class CardFields:
    """What a card gives an avatar."""

    name: str
    persona: str
    greeting: str
    examples: str
    extras: dict = field(default_factory=dict)  # {"spec": V2|V3, "data": {unmapped fields}}
    portrait: bytes = b""  # a resized PNG, or empty


# --- reading ---------------------------------------------------------------------------------


def read_card(content: bytes) -> CardFields:
    """A card from the bytes of a `.json` or `.png` file."""
    if len(content) > MAX_CARD_BYTES:
        raise CardError(f"The file is larger than {MAX_CARD_BYTES // (1024 * 1024)} MB.")
    if content.startswith(PNG_SIGNATURE):
        image = open_image(content, formats=("PNG",))
        card = card_from_png(image)
        card.portrait = portrait_png(image)
        return card
    return card_from_json(content)


def card_from_json(content: bytes) -> CardFields:
    if len(content) > MAX_JSON_BYTES:
        raise CardError(f"The card's JSON is larger than {MAX_JSON_BYTES // 1024} KB.")
    try:
        card = json.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise CardError("The file is neither a PNG image nor a JSON card.") from None
    return card_fields(card)


def card_fields(card) -> CardFields:
    """Checks a decoded card and maps it (see the module doc)."""
    if not isinstance(card, dict) or card.get("spec") not in SPEC_VERSIONS:
        raise CardError(
            f"This is not a Character Card V2 or V3: its spec must be {V2!r} or {V3!r}."
        )
    spec = card["spec"]
    version = card.get("spec_version")
    if not isinstance(version, str) or version.split(".")[0] != SPEC_VERSIONS[spec][0]:
        raise CardError(f"A {spec} card needs spec_version {SPEC_VERSIONS[spec]!r}.")
    data = card.get("data")
    if not isinstance(data, dict):
        raise CardError("The card has no data object.")
    missing = [key for key in MAPPED if not isinstance(data.get(key), str)]
    if missing:
        raise CardError(f"The card lacks these text fields: {', '.join(missing)}.")
    check_sizes(data)
    name = data["name"].strip()
    if not name:
        raise CardError("The card's name is empty.")
    return CardFields(
        name=name,
        persona=join_persona(data["description"], data["personality"], data["scenario"]),
        greeting=data["first_mes"],
        examples=data["mes_example"],
        extras={"spec": spec, "data": {k: v for k, v in data.items() if k not in MAPPED}},
    )


def check_sizes(value, where: str = "data") -> None:
    """Refuses a card with any text longer than MAX_FIELD_CHARS, however deep (a lorebook)."""
    if isinstance(value, str) and len(value) > MAX_FIELD_CHARS:
        raise CardError(f"The card's {where} is longer than {MAX_FIELD_CHARS} characters.")
    if isinstance(value, dict):
        for key, item in value.items():
            check_sizes(item, f"{where}.{key}")
    elif isinstance(value, list):
        for item in value:
            check_sizes(item, where)


def card_from_png(image: Image.Image) -> CardFields:
    try:
        chunks = image.text  # reads to the end of the file: tEXt may follow the pixels
    except (OSError, ValueError, SyntaxError):
        raise CardError("The PNG is damaged or its text chunks are too large.") from None
    keyword = next((k for k in (PNG_KEYWORDS[V3], PNG_KEYWORDS[V2]) if k in chunks), None)
    if keyword is None:
        raise CardError("The PNG holds no character card (no 'chara' or 'ccv3' text chunk).")
    raw = chunks[keyword]
    if len(raw) > MAX_JSON_BYTES * 4 // 3 + 4:
        raise CardError(f"The card's JSON is larger than {MAX_JSON_BYTES // 1024} KB.")
    try:
        content = base64.b64decode("".join(raw.split()), validate=True)
    except (binascii.Error, ValueError):
        raise CardError(f"The PNG's {keyword!r} chunk is not valid base64.") from None
    return card_from_json(content)


def join_persona(description: str, personality: str, scenario: str) -> str:
    parts = [description] if description.strip() else []
    if personality.strip():
        parts.append(PERSONALITY + personality)
    if scenario.strip():
        parts.append(SCENARIO + scenario)
    return "\n\n".join(parts)


def split_persona(persona: str) -> tuple[str, str, str]:
    """(description, personality, scenario) back out of a persona made by `join_persona`."""
    rest, scenario = _split_last(persona, SCENARIO)
    description, personality = _split_last(rest, PERSONALITY)
    return description, personality, scenario


def _split_last(text: str, label: str) -> tuple[str, str]:
    head, sep, tail = text.rpartition("\n\n" + label)
    if sep:
        return head, tail
    if text.startswith(label):
        return "", text[len(label) :]
    return text, ""


# --- writing ---------------------------------------------------------------------------------


def build_card(
    spec: str, name: str, persona: str, greeting: str, examples: str, extras: dict
) -> dict:
    """The card of an avatar in version `spec` (V2 or V3), its extras given back."""
    description, personality, scenario = split_persona(persona)
    data = dict(V2_DEFAULTS)
    if spec == V3:
        data.update(V3_DEFAULTS)
    data.update(extras.get("data", {}))
    if spec == V2:
        for key in V3_ONLY:
            data.pop(key, None)
    data.update(
        name=name,
        description=description,
        personality=personality,
        scenario=scenario,
        first_mes=greeting,
        mes_example=examples,
    )
    return {"spec": spec, "spec_version": SPEC_VERSIONS[spec], "data": data}


def card_json(card: dict) -> bytes:
    return json.dumps(card, ensure_ascii=False, indent=2).encode("utf-8")


def card_png(cards: list[dict], portrait: bytes) -> bytes:
    """The portrait (or a plain square without one) with `cards` in their text chunks."""
    image = Image.open(io.BytesIO(portrait)) if portrait else Image.new("RGB", (256, 256), "#345")
    info = PngImagePlugin.PngInfo()
    for card in cards:
        payload = base64.b64encode(json.dumps(card, ensure_ascii=False).encode("utf-8"))
        info.add_text(PNG_KEYWORDS[card["spec"]], payload.decode("ascii"))
    out = io.BytesIO()
    image.save(out, format="PNG", pnginfo=info)
    return out.getvalue()


# --- images ----------------------------------------------------------------------------------


def open_image(content: bytes, formats=IMAGE_FORMATS) -> Image.Image:
    """The image in `content`, refused unless it is one of `formats`, within MAX_IMAGE_SIDE
    on each side, and decodes whole. The dimensions are checked from the header, before any
    pixel is decoded."""
    try:
        image = Image.open(io.BytesIO(content), formats=formats)
    except Image.DecompressionBombError:  # Pillow's own check, on far larger images
        raise CardError(
            f"The image is far too large; at most {MAX_IMAGE_SIDE} on each side."
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise CardError(f"The image must be a {' or '.join(formats)} file.") from None
    width, height = image.size
    if width > MAX_IMAGE_SIDE or height > MAX_IMAGE_SIDE or width < 1 or height < 1:
        raise CardError(
            f"The image is {width}×{height} pixels; at most {MAX_IMAGE_SIDE} on each side."
        )
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise CardError("The image is damaged or truncated.") from None
    return image


def read_upload(upload, limit: int) -> bytes:
    """An uploaded file's bytes, refused before reading when larger than `limit`."""
    if upload.size > limit:
        raise CardError(f"The file is larger than {limit // (1024 * 1024)} MB.")
    return upload.read()


def read_portrait(content: bytes) -> bytes:
    """A portrait upload, checked and resized (see `portrait_png`)."""
    if len(content) > MAX_IMAGE_BYTES:
        raise CardError(f"The image is larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MB.")
    return portrait_png(open_image(content))


def portrait_png(image: Image.Image) -> bytes:
    """The image fitted within PORTRAIT_SIDE pixels, as a PNG without any text chunk (the
    card it came in is not kept in the portrait)."""
    image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    image.thumbnail((PORTRAIT_SIDE, PORTRAIT_SIDE))
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()
