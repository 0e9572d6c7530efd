"""Hunt files (`lostwallet.hunt/1`): validation, import and export.

The contract is ../shared/contracts/hunt-file.md; docs/hunt-file.md restates it with this
server's additive extensions (per-clue `examples`, `counterexamples`, `threshold`, `reveal`;
per-hunt `registration_open`, `claims_need_all_words` and `limits`; per-avatar `published`,
`examples` and `checks`, the persona checks of model certification).

An import is all or nothing: every problem is collected with its JSON path, and only a file
without problems is written, inside one transaction.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from django.contrib.auth.hashers import check_password, identify_hasher, make_password
from django.db import transaction
from django.utils.dateparse import parse_datetime

from avatars.models import Avatar, PersonaCheck
from hunt.bip39 import bip39_checksum_ok, bip39_words, phrase_of
from hunt.models import PHRASE_LENGTH, Clue, Discovery, Hunt, SeedWord, guarded_words_in

FORMAT = "lostwallet.hunt/1"
SLUG_RE = re.compile(r"^[-a-zA-Z0-9_]{1,64}$")
LIMIT_FIELDS = (
    "chat_rate_per_minute",
    "chat_burst",
    "claim_cooldown_seconds",
    "gate_attempts",
    "gate_cooldown_seconds",
    "claims_per_address_per_hour",
)


class HuntFileError(Exception):
    """The file was refused; `problems` holds one "JSON path: message" line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass
class _Checker:
    """Collects problems while walking the document; each helper returns the value or None."""

    problems: list[str] = field(default_factory=list)

    def add(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def text(self, obj: dict, key: str, path: str, required: bool = True, max_len: int = 0):
        value = obj.get(key)
        if value is None:
            if required:
                self.add(f"{path}.{key}", "is required")
            return None if required else ""
        if not isinstance(value, str) or (required and not value.strip()):
            self.add(f"{path}.{key}", "must be a non-empty string" if required else "must be text")
            return None
        if max_len and len(value) > max_len:
            self.add(f"{path}.{key}", f"is longer than {max_len} characters")
            return None
        return value

    def strings(self, obj: dict, key: str, path: str, required: bool = False) -> list[str]:
        value = obj.get(key)
        if value is None:
            if required:
                self.add(f"{path}.{key}", "is required (a list of strings)")
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            self.add(f"{path}.{key}", "must be a list of non-empty strings")
            return []
        if required and not value:
            self.add(f"{path}.{key}", "must hold at least one entry")
        return value

    def objects(self, items: list, path: str):
        """(JSON path, entry) of each object in `items`; other entries are reported."""
        for i, item in enumerate(items):
            if isinstance(item, dict):
                yield f"{path}[{i}]", item
            else:
                self.add(f"{path}[{i}]", "must be an object")

    def when(self, obj: dict, key: str, path: str) -> datetime | None:
        raw = obj.get(key)
        value = parse_datetime(raw) if isinstance(raw, str) else None
        if value is None or value.tzinfo is None:
            self.add(f"{path}.{key}", "must be an ISO 8601 date and time with a time zone")
            return None
        return value


def validate_hunt_document(doc: Any) -> list[str]:
    """Every problem of a hunt document, as "JSON path: message" lines; empty when valid."""
    c = _Checker()
    if not isinstance(doc, dict):
        return ["$: the file must hold one JSON object"]
    if doc.get("format") != FORMAT:
        c.add("$.format", f"unknown format {doc.get('format')!r}; expected {FORMAT!r}")
        return c.problems

    slug = c.text(doc, "slug", "$")
    if slug and not SLUG_RE.match(slug):
        c.add("$.slug", "may hold only letters, digits, '-' and '_' (at most 64)")
    c.text(doc, "title", "$", max_len=200)
    c.text(doc, "description", "$", required=False)
    c.text(doc, "prize", "$", required=False, max_len=300)
    starts, ends = c.when(doc, "starts_at", "$"), c.when(doc, "ends_at", "$")
    if starts and ends and ends <= starts:
        c.add("$.ends_at", "must be after starts_at")
    for key in ("registration_open", "claims_need_all_words"):
        if key in doc and not isinstance(doc[key], bool):
            c.add(f"$.{key}", "must be true or false")
    limits = doc.get("limits", {})
    if not isinstance(limits, dict):
        c.add("$.limits", "must be an object")
    else:
        for key, value in limits.items():
            if key not in LIMIT_FIELDS:
                c.add(f"$.limits.{key}", f"unknown limit; known: {', '.join(LIMIT_FIELDS)}")
            elif not isinstance(value, int) or isinstance(value, bool) or value < 1:
                c.add(f"$.limits.{key}", "must be a positive integer")

    words = _check_words(c, doc)
    guarded = {pos: w for pos, w in words.items() if w}
    _check_phrase(c, doc, words)
    guarded_by = _check_avatars(c, doc, guarded)

    for pos in sorted(set(guarded) - guarded_by):
        c.add(f"$.words[{pos}]", f"the word at position {pos} is guarded by no clue")

    # A guarded word in any text seen before unlock would hand it to every player.
    secret = list(guarded.values())
    for path, text in _public_texts(doc):
        for word in guarded_words_in([text], secret):
            position = next(p for p, w in guarded.items() if w == word)
            c.add(path, f"contains the guarded word of position {position}")
    return c.problems


def _check_words(c: _Checker, doc: dict) -> dict[int, str | None]:
    entries = doc.get("words")
    if not isinstance(entries, list):
        c.add("$.words", f"must be a list of {PHRASE_LENGTH} entries")
        return {}
    if len(entries) != PHRASE_LENGTH:
        c.add("$.words", f"must hold exactly {PHRASE_LENGTH} entries, found {len(entries)}")
    words: dict[int, str | None] = {}
    for path, entry in c.objects(entries, "$.words"):
        pos = entry.get("position")
        if not isinstance(pos, int) or isinstance(pos, bool) or not 1 <= pos <= PHRASE_LENGTH:
            c.add(f"{path}.position", f"must be an integer from 1 to {PHRASE_LENGTH}")
            continue
        if pos in words:
            c.add(f"{path}.position", f"position {pos} appears twice")
            continue
        word = entry.get("word")
        if word is not None:
            if not isinstance(word, str) or word.strip().lower() not in bip39_words():
                c.add(f"{path}.word", "is not a word of the BIP39 English list")
                word = None
            else:
                word = word.strip().lower()
        words[pos] = word
        c.text(entry, "world", path, required=False, max_len=120)
        c.text(entry, "hint", path, required=False, max_len=300)
    valid_entries = sum(isinstance(e, dict) for e in entries) == len(entries)
    for pos in range(1, PHRASE_LENGTH + 1):
        if valid_entries and pos not in words:
            c.add("$.words", f"position {pos} is missing")
    return words


def _check_phrase(c: _Checker, doc: dict, words: dict[int, str | None]) -> None:
    phrase_hash = doc.get("phrase_hash")
    complete = len(words) == PHRASE_LENGTH and all(words.values())
    if phrase_hash is not None:
        try:
            identify_hasher(phrase_hash)
        except (ValueError, TypeError):
            c.add("$.phrase_hash", "is not in Django's password hasher format")
            phrase_hash = None
    if complete:
        ordered = [words[p] for p in range(1, PHRASE_LENGTH + 1)]
        if not bip39_checksum_ok(ordered):
            c.add("$.words", "the 24 words fail the BIP39 checksum")
        elif phrase_hash and not check_password(phrase_of(ordered), phrase_hash):
            c.add("$.phrase_hash", "does not match the 24 words")
    elif phrase_hash is None and "phrase_hash" not in doc:
        c.add("$.phrase_hash", "is required when some words are hidden elsewhere")


def _check_avatars(c: _Checker, doc: dict, guarded: dict[int, str]) -> set[int]:
    """Checks avatars and their clues; returns the positions some clue guards."""
    avatars = doc.get("avatars", [])
    if not isinstance(avatars, list):
        c.add("$.avatars", "must be a list")
        return set()
    slugs: set[str] = set()
    guarded_by: set[int] = set()
    requires: dict[int, set[int]] = {}
    for path, avatar in c.objects(avatars, "$.avatars"):
        slug = c.text(avatar, "slug", path)
        if slug and not SLUG_RE.match(slug):
            c.add(f"{path}.slug", "may hold only letters, digits, '-' and '_' (at most 64)")
        elif slug in slugs:
            c.add(f"{path}.slug", f"duplicate avatar slug {slug!r}")
        elif slug:
            slugs.add(slug)
            other = Avatar.objects.filter(slug=slug).exclude(hunt__slug=doc.get("slug")).first()
            if other:
                c.add(f"{path}.slug", f"avatar slug {slug!r} is taken by another hunt's avatar")
        c.text(avatar, "name", path, max_len=100)
        persona = c.text(avatar, "persona", path)
        greeting = c.text(avatar, "greeting", path, required=False, max_len=300)
        examples = c.text(avatar, "examples", path, required=False)
        if persona and greeting is not None and examples is not None:
            _check_persona_fits(c, doc, persona, greeting, examples, f"{path}.persona")
        c.text(avatar, "land", path, required=False, max_len=200)
        _check_location(c, avatar.get("location"), f"{path}.location")
        checks = avatar.get("checks", [])
        if not isinstance(checks, list):
            c.add(f"{path}.checks", "must be a list")
            checks = []
        for kpath, check in c.objects(checks, f"{path}.checks"):
            c.text(check, "question", kpath, max_len=300)
            for key in ("must_contain", "must_not_contain"):
                c.strings(check, key, kpath)
        clues = avatar.get("clues", [])
        if not isinstance(clues, list):
            c.add(f"{path}.clues", "must be a list")
            continue
        seen: set[int] = set()
        for cpath, clue in c.objects(clues, f"{path}.clues"):
            pos = clue.get("position")
            if not isinstance(pos, int) or isinstance(pos, bool):
                c.add(f"{cpath}.position", "must be an integer")
            elif pos not in guarded:
                c.add(f"{cpath}.position", f"position {pos} has no word on this server")
            elif pos in seen:
                c.add(f"{cpath}.position", f"this avatar already guards position {pos}")
            else:
                seen.add(pos)
                guarded_by.add(pos)
            c.strings(clue, "questions", cpath, required=True)
            for key in ("keywords", "hints", "examples", "counterexamples"):
                c.strings(clue, key, cpath)
            c.text(clue, "reveal", cpath, required=False, max_len=300)
            threshold = clue.get("threshold")
            if threshold is not None and (
                not isinstance(threshold, int | float) or not 0 < threshold <= 1
            ):
                c.add(f"{cpath}.threshold", "must be a number in (0, 1]")
            needs = clue.get("requires", [])
            if not isinstance(needs, list) or not all(
                isinstance(n, int) and not isinstance(n, bool) for n in needs
            ):
                c.add(f"{cpath}.requires", "must be a list of positions")
            elif isinstance(pos, int):
                for n in needs:
                    if n not in guarded:
                        c.add(f"{cpath}.requires", f"position {n} has no word on this server")
                requires.setdefault(pos, set()).update(needs)
    for pos in sorted(set(requires) & guarded_by):
        if _in_cycle(pos, requires):
            c.add("$.avatars", f"the `requires` of position {pos} form a cycle")
    return guarded_by


def _check_persona_fits(
    c: _Checker, doc: dict, persona: str, greeting: str, examples: str, path: str
) -> None:
    """The persona (with greeting and example dialogues) goes whole into every prompt; one too
    long for the budget is refused."""
    from django.core.exceptions import ValidationError

    from avatars.engine.prompts import check_persona_fits, hunt_context

    title, description = doc.get("title"), doc.get("description")
    context = hunt_context(
        title if isinstance(title, str) else "",
        description if isinstance(description, str) else "",
    )
    try:
        check_persona_fits(persona, greeting, context, examples=examples)
    except ValidationError as exc:
        c.add(path, " ".join(exc.messages))


def _check_location(c: _Checker, location: Any, path: str) -> None:
    if location is None:
        return
    if not isinstance(location, dict):
        c.add(path, 'must be {"lat": number, "lon": number} or null')
        return
    for key, bound in (("lat", 90), ("lon", 180)):
        value = location.get(key)
        if not isinstance(value, int | float) or isinstance(value, bool) or abs(value) > bound:
            c.add(f"{path}.{key}", f"must be a number from -{bound} to {bound}")


def _in_cycle(start: int, requires: dict[int, set[int]]) -> bool:
    stack, seen = list(requires.get(start, ())), set()
    while stack:
        node = stack.pop()
        if node == start:
            return True
        if node not in seen:
            seen.add(node)
            stack.extend(requires.get(node, ()))
    return False


def _public_texts(doc: dict):
    """(JSON path, text) of everything the model or players can see before an unlock."""
    for key in ("title", "description", "prize"):
        if isinstance(doc.get(key), str):
            yield f"$.{key}", doc[key]
    for i, entry in enumerate(doc.get("words") or []):
        if isinstance(entry, dict):
            for key in ("world", "hint"):
                if isinstance(entry.get(key), str):
                    yield f"$.words[{i}].{key}", entry[key]
    for i, avatar in enumerate(doc.get("avatars") or []):
        if not isinstance(avatar, dict):
            continue
        for key in ("name", "persona", "greeting", "examples", "land"):
            if isinstance(avatar.get(key), str):
                yield f"$.avatars[{i}].{key}", avatar[key]
        # Certification asks the model these questions without any unlock.
        for j, check in enumerate(avatar.get("checks") or []):
            if isinstance(check, dict) and isinstance(check.get("question"), str):
                yield f"$.avatars[{i}].checks[{j}].question", check["question"]
        for j, clue in enumerate(avatar.get("clues") or []):
            if not isinstance(clue, dict):
                continue
            if isinstance(clue.get("reveal"), str):
                yield f"$.avatars[{i}].clues[{j}].reveal", clue["reveal"]
            # Examples and counterexamples are organizer-only test data, never shown.
            for key in ("questions", "keywords", "hints"):
                for k, text in enumerate(clue.get(key) or []):
                    if isinstance(text, str):
                        yield f"$.avatars[{i}].clues[{j}].{key}[{k}]", text


def import_hunt_document(doc: dict) -> Hunt:
    """Validates and writes a hunt document; creates the hunt or updates it in place.

    Raises HuntFileError with every problem and writes nothing when the file is refused.
    """
    problems = validate_hunt_document(doc)
    if problems:
        raise HuntFileError(problems)
    with transaction.atomic():
        hunt = _write(doc)
    # Once written (a refused import has nothing to calibrate): each clue's operating point.
    calibrate_hunt(hunt)
    return hunt


def calibrate_hunt(hunt: Hunt) -> None:
    """Calibrates the operating point of every clue of the hunt (hunt.gate.calibrate_clues)."""
    # Here, not at the top: the gate's matcher loads numpy, which the web tier does without.
    from hunt.gate import calibrate_clues

    for avatar_id in (
        Avatar.objects.filter(hunt=hunt, clues__isnull=False)
        .values_list("pk", flat=True)
        .distinct()
    ):
        calibrate_clues(avatar_id)


def import_hunt_file(path: str | Path) -> Hunt:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise HuntFileError([f"$: cannot read {path}: {exc}"]) from None
    except json.JSONDecodeError as exc:
        raise HuntFileError(
            [f"$: not valid JSON (line {exc.lineno}, column {exc.colno})"]
        ) from None
    return import_hunt_document(doc)


def _write(doc: dict) -> Hunt:
    words = {e["position"]: e.get("word") for e in doc["words"]}
    complete = all(words.values())
    # Race: two imports of one slug at once; the row lock makes the second wait and then
    # update the first one's result instead of failing on the unique slug.
    hunt = Hunt.objects.select_for_update().filter(slug=doc["slug"]).first() or Hunt(
        slug=doc["slug"]
    )
    hunt.title = doc["title"]
    hunt.description = doc.get("description", "")
    hunt.prize = doc.get("prize", "")
    hunt.starts_at = parse_datetime(doc["starts_at"])
    hunt.ends_at = parse_datetime(doc["ends_at"])
    for key in ("registration_open", "claims_need_all_words"):
        if key in doc:
            setattr(hunt, key, doc[key])
    for key, value in doc.get("limits", {}).items():
        setattr(hunt, key, value)
    ordered = [words[p] for p in range(1, PHRASE_LENGTH + 1)]
    if doc.get("phrase_hash"):
        hunt.phrase_hash = doc["phrase_hash"]
    elif complete:
        hunt.phrase_hash = make_password(phrase_of(ordered))
    hunt.save()

    existing = {w.position: w for w in hunt.words.all()}
    refused = []
    for entry in doc["words"]:
        pos = entry["position"]
        seed = existing.get(pos) or SeedWord(hunt=hunt, position=pos)
        new_word = (entry.get("word") or "").strip().lower()
        if seed.pk and seed.reveal_word() != new_word:
            if Discovery.objects.filter(word=seed).exists():
                refused.append(
                    f"$.words[{doc['words'].index(entry)}].word: position {pos} was already "
                    "discovered by players; its word cannot change"
                )
                continue
        if not seed.pk or seed.reveal_word() != new_word:
            seed.set_word(new_word)
        seed.world = entry.get("world", "")
        seed.hint = entry.get("hint", "")
        seed.save()
        existing[pos] = seed
    if refused:
        # Raising inside the atomic block rolls back everything written above.
        raise HuntFileError(refused)

    in_file = set()
    for entry in doc.get("avatars", []):
        avatar = Avatar.objects.filter(slug=entry["slug"]).first() or Avatar(slug=entry["slug"])
        avatar.hunt = hunt
        avatar.name = entry["name"]
        avatar.persona = entry["persona"]
        avatar.greeting = entry.get("greeting", "")
        avatar.examples = entry.get("examples", "")
        avatar.land = entry.get("land", "")
        location = entry.get("location") or {}
        avatar.latitude, avatar.longitude = location.get("lat"), location.get("lon")
        avatar.published = bool(entry.get("published", True))
        avatar.save()
        in_file.add(avatar.pk)
        kept = []
        for clue_doc in entry.get("clues", []):
            clue, _ = Clue.objects.update_or_create(
                avatar=avatar,
                word=existing[clue_doc["position"]],
                defaults={
                    "questions": clue_doc["questions"],
                    "keywords": clue_doc.get("keywords", []),
                    "requires": clue_doc.get("requires", []),
                    "hints": clue_doc.get("hints", []),
                    "examples": clue_doc.get("examples", []),
                    "counterexamples": clue_doc.get("counterexamples", []),
                    "threshold": clue_doc.get("threshold"),
                    "reveal_line": clue_doc.get("reveal", ""),
                },
            )
            kept.append(clue.pk)
        avatar.clues.exclude(pk__in=kept).delete()
        avatar.persona_checks.all().delete()
        PersonaCheck.objects.bulk_create(
            PersonaCheck(
                avatar=avatar,
                question=check["question"],
                must_contain="\n".join(check.get("must_contain", [])),
                must_not_contain="\n".join(check.get("must_not_contain", [])),
            )
            for check in entry.get("checks", [])
        )
    # Avatars dropped from the file keep their conversations (players' history) but close.
    hunt.avatars.exclude(pk__in=in_file).update(published=False)
    return hunt


def export_hunt_document(hunt: Hunt) -> dict:
    """The hunt as a hunt-file document; importing it again yields the same hunt."""
    doc: dict[str, Any] = {
        "format": FORMAT,
        "slug": hunt.slug,
        "title": hunt.title,
        "description": hunt.description,
        "starts_at": _iso(hunt.starts_at),
        "ends_at": _iso(hunt.ends_at),
        "prize": hunt.prize,
        "phrase_hash": hunt.phrase_hash,
        "registration_open": hunt.registration_open,
        "claims_need_all_words": hunt.claims_need_all_words,
        "limits": {key: getattr(hunt, key) for key in LIMIT_FIELDS},
        "words": [],
        "avatars": [],
    }
    for seed in hunt.words.order_by("position"):
        entry: dict[str, Any] = {"position": seed.position}
        if seed.has_word:
            entry["word"] = seed.reveal_word()
        entry.update({"world": seed.world, "hint": seed.hint})
        doc["words"].append(entry)
    for avatar in hunt.avatars.order_by("slug").prefetch_related("clues__word", "persona_checks"):
        entry = {
            "slug": avatar.slug,
            "name": avatar.name,
            "persona": avatar.persona,
            "greeting": avatar.greeting,
            "examples": avatar.examples,
            "land": avatar.land,
            "location": avatar.location,
            "published": avatar.published,
            "clues": [],
        }
        for clue in avatar.clues.order_by("word__position"):
            clue_doc: dict[str, Any] = {
                "position": clue.word.position,
                "questions": clue.questions,
                "keywords": clue.keywords,
                "requires": clue.requires,
                "hints": clue.hints,
            }
            for key in ("examples", "counterexamples"):
                if getattr(clue, key):
                    clue_doc[key] = getattr(clue, key)
            if clue.threshold is not None:
                clue_doc["threshold"] = clue.threshold
            if clue.reveal_line:
                clue_doc["reveal"] = clue.reveal_line
            entry["clues"].append(clue_doc)
        if checks := list(avatar.persona_checks.all()):
            entry["checks"] = [
                {
                    "question": check.question,
                    "must_contain": check.must_contain.splitlines(),
                    "must_not_contain": check.must_not_contain.splitlines(),
                }
                for check in checks
            ]
        doc["avatars"].append(entry)
    return doc


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")
