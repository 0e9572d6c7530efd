"""The creator studio (avatars/studio.py): creators write and submit drafts, talk to them in
the sandbox, organizers review and publish them; the forbidden paths of each actor.

Actors: `creator` (in the creators group, not staff), `rival` (another creator), `player` (no
role), `organizer` (may change hunts, not superuser), `admin` (superuser).
"""

from __future__ import annotations

import re
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.contrib.auth.models import Permission, User
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.utils import timezone

from avatars import cards, chat, studio, turns
from avatars.models import Avatar, Conversation, Message, Portrait
from hunt.models import Clue, Discovery, guarded_words_in

pytest_plugins = ["tests.engine_support"]
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_hashing")]

API = "/api/v1/creator"
PERSONA = "You are Wren, a ferry pilot who knows every current of the bay. You answer briefly."


@pytest.fixture
def creator(make_user):
    user = make_user("creator")
    studio.grant_creator(user)
    return user


@pytest.fixture
def rival(make_user):
    user = make_user("rival")
    studio.grant_creator(user)
    return user


@pytest.fixture
def organizer(make_user):
    user = make_user("organizer", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="change_hunt"))
    return user


@pytest.fixture
def admin_user(make_user):
    return make_user("boss", is_staff=True, is_superuser=True)


def make_draft(
    creator, name: str = "Wren", persona: str = PERSONA, portrait: str = "", **fields
) -> Avatar:
    form = studio.DraftForm(data={"name": name, "persona": persona, "land": "", **fields})
    assert form.is_valid(), form.errors
    return studio.do_create_draft(creator, form, portrait=portrait)


def own_marta(creator) -> Avatar:
    """The demo hunt's Old Marta (live, guarding a word), owned by `creator`."""
    marta = Avatar.objects.get(slug="old-marta")
    marta.owner = creator
    marta.save()
    return marta


# --- who may use the studio ------------------------------------------------------------------


def test_an_account_without_the_creator_role_is_refused_the_studio(client, make_user):
    client.force_login(make_user("player"))
    assert client.get("/studio/").status_code == 403
    refused = client.get(f"{API}/avatars")
    assert (refused.status_code, refused.json()["error"]) == (403, "forbidden")


def test_the_studio_needs_a_sign_in(client):
    assert client.get("/studio/").status_code == 302
    assert client.get(f"{API}/avatars").status_code == 401


def test_grant_creator_gives_the_role(make_user):
    user = make_user("newbie")
    assert not studio.is_creator(user)
    call_command("grant_creator", "newbie")
    assert studio.is_creator(user)


def test_a_creator_cannot_see_or_edit_another_creators_draft(client, creator, rival):
    draft = make_draft(rival, "Rival's Wren")
    client.force_login(creator)
    base = f"{API}/avatars/{draft.slug}"
    payload = {"name": "Taken", "persona": PERSONA}
    assert client.get(base).status_code == 404
    assert client.put(base, payload, content_type="application/json").status_code == 404
    assert client.post(f"{base}/submit").status_code == 404
    assert client.post(f"{base}/revise").status_code == 404
    assert client.get(f"{base}/card").status_code == 404
    assert [a["slug"] for a in client.get(f"{API}/avatars").json()] == []
    assert client.get(f"/studio/{draft.slug}/").status_code == 404
    assert client.post(f"/studio/{draft.slug}/", payload).status_code == 404
    assert client.post(f"/studio/{draft.slug}/submit/").status_code == 404
    assert client.get(f"/studio/{draft.slug}/card/v2.json").status_code == 404
    # Nor talk to it, nor see its portrait.
    assert client.get(f"/chat/{draft.slug}/").status_code == 404
    assert client.get(f"/avatars/{draft.slug}/portrait.png").status_code == 404
    draft.refresh_from_db()
    assert (draft.name, draft.review) == ("Rival's Wren", "draft")


def test_a_creator_never_sees_the_words_or_clues_of_their_live_avatar(client, demo_hunt, creator):
    marta = own_marta(creator)
    words = demo_hunt.guarded_words().values()
    # Whole sentences: a keyword alone may be an everyday word of the persona.
    sentences = []
    for clue in Clue.objects.filter(word__hunt=demo_hunt):
        sentences += [*clue.questions, *clue.hints, *clue.examples, *clue.counterexamples]
    client.force_login(creator)
    copy = client.post(f"{API}/avatars/{marta.slug}/revise").json()
    pages = [
        client.get("/studio/"),
        client.get(f"/studio/{marta.slug}/"),
        client.get(f"/studio/{copy['slug']}/"),
        client.get(f"{API}/avatars"),
        client.get(f"{API}/avatars/{marta.slug}"),
        client.get(f"{API}/avatars/{copy['slug']}"),
        client.get(f"{API}/avatars/{copy['slug']}/card?spec=v3"),
        client.get(f"/studio/{marta.slug}/card/v2.json"),
    ]
    for page in pages:
        assert page.status_code == 200
        text = page.content.decode().lower()
        assert not guarded_words_in([text], words)
        assert not [s for s in sentences if s.lower() in text]
    assert "hunt" not in client.get(f"{API}/avatars/{marta.slug}").json()


def test_organizers_without_superuser_review_but_do_not_publish(client, creator, organizer):
    draft = studio.do_submit(creator, make_draft(creator))
    client.force_login(organizer)
    assert draft.name in client.get("/studio/review/").content.decode()
    page = client.get(f"/studio/review/{draft.slug}/")
    assert page.status_code == 200 and b"Approve and publish" not in page.content
    assert client.post(f"/studio/review/{draft.slug}/", {"approve": "1"}).status_code == 403
    draft.refresh_from_db()
    assert (draft.published, draft.review) == (False, "submitted")


def test_creators_and_players_do_not_see_the_review_queue(client, creator):
    draft = studio.do_submit(creator, make_draft(creator))
    client.force_login(creator)
    assert client.get("/studio/review/").status_code == 403
    assert client.get(f"/studio/review/{draft.slug}/").status_code == 403


# --- checks on save ----------------------------------------------------------------------------


def post_draft(client, **fields):
    return client.post(
        f"{API}/avatars", {"persona": PERSONA, **fields}, content_type="application/json"
    )


def test_the_api_creates_a_draft_of_no_hunt(client, creator):
    client.force_login(creator)
    response = post_draft(client, name="Wren", greeting="Ahoy.", examples="<START>\nHi!")
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["slug"], body["review"], body["published"]) == ("wren", "draft", False)
    avatar = Avatar.objects.get(slug="wren")
    assert (avatar.owner, avatar.hunt, avatar.examples) == (creator, None, "<START>\nHi!")


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"name": ""}, "name: This field is required."),
        ({"name": "W", "persona": ""}, "persona: This field is required."),
        ({"name": "Old Marta"}, "name: Another avatar already has this name."),
        ({"name": "W", "greeting": PERSONA}, "greeting: The greeting repeats the persona."),
        ({"name": "W", "examples": PERSONA}, "examples: The example dialogues repeat"),
        ({"name": "W", "persona": "A ferry pilot. " * 400}, "persona: The persona is too long"),
        ({"name": "W", "greeting": "Hi! " * 100}, "at most 300 characters"),
    ],
)
def test_a_save_failing_a_check_is_refused_with_a_clear_message(
    client, demo_hunt, creator, fields, message
):
    client.force_login(creator)
    response = post_draft(client, **fields)
    assert response.status_code == 400
    assert message in response.json()["detail"]
    assert not Avatar.objects.filter(owner=creator).exists()


def test_many_examples_are_kept_whole_and_prompted_as_far_as_they_fit(client, creator, settings):
    """Every example dialogue is fine-tuning data; the prompt takes those that fit."""
    settings.AVATAR_PROMPT_BUDGET = 512
    client.force_login(creator)
    examples = "<START>\n{{user}}: Where to?\n{{char}}: Across the bay, as always. " * 12
    assert post_draft(client, name="Talkative", examples=examples).status_code == 201
    assert Avatar.objects.get(name="Talkative").examples == examples.strip()


def test_a_creators_save_is_never_checked_for_guarded_words(client, demo_hunt, creator):
    """A message about a guarded word would tell the creator the word is guarded: drafts are
    checked when a superuser publishes them into a hunt (docs/security.md)."""
    word = demo_hunt.guarded_words()[3]
    client.force_login(creator)
    response = post_draft(client, name="Tester", persona=f"You love the word {word}.")
    assert response.status_code == 201


def test_the_token_meter_counts_as_the_prompt_does(client, creator):
    client.force_login(creator)
    short = client.post(f"{API}/meter", {"persona": "Hi."}, content_type="application/json")
    longer = client.post(
        f"{API}/meter",
        {"persona": "Hi.", "examples": "<START>\nA long example of talk. " * 5},
        content_type="application/json",
    )
    assert short.status_code == longer.status_code == 200
    assert short.json()["room"] == longer.json()["room"] > 0
    assert longer.json()["tokens"] > short.json()["tokens"] > 0


def test_the_studio_page_saves_a_draft_and_its_portrait(client, creator):
    from tests.test_character_cards import image_bytes

    draft = make_draft(creator)
    client.force_login(creator)
    from django.core.files.uploadedfile import SimpleUploadedFile

    picture = SimpleUploadedFile("wren.jpg", image_bytes("JPEG", (900, 600)), "image/jpeg")
    fields = {"name": "Wren", "persona": PERSONA, "greeting": "Ahoy!", "land": "Bay"}
    response = client.post(f"/studio/{draft.slug}/", {**fields, "portrait": picture})
    assert response.status_code == 302
    draft.refresh_from_db()
    assert (draft.greeting, draft.land, bool(draft.portrait)) == ("Ahoy!", "Bay", True)
    portrait = client.get(f"/avatars/{draft.slug}/portrait.png")
    assert (portrait.status_code, portrait["Content-Type"]) == (200, "image/png")
    assert b"Talk to it in the sandbox" in client.get(f"/studio/{draft.slug}/").content


def test_the_studio_page_refuses_a_broken_portrait_and_keeps_the_draft(client, creator):
    from django.core.files.uploadedfile import SimpleUploadedFile

    draft = make_draft(creator)
    client.force_login(creator)
    junk = SimpleUploadedFile("wren.png", b"\x89PNG\r\n\x1a\nnot really", "image/png")
    response = client.post(
        f"/studio/{draft.slug}/", {"name": "Renamed", "persona": PERSONA, "portrait": junk}
    )
    assert response.status_code == 200
    assert b"must be a PNG or JPEG or WEBP file" in response.content
    draft.refresh_from_db()
    assert (draft.name, bool(draft.portrait)) == ("Wren", False)


# --- submit, review, publish -------------------------------------------------------------------


def test_an_edit_racing_a_return_keeps_the_reviewers_comment(creator):
    draft = studio.do_submit(creator, make_draft(creator))
    form = studio.DraftForm(data={"name": "Wren", "persona": PERSONA + " Edited."}, instance=draft)
    assert form.is_valid(), form.errors
    studio.do_return(draft, "Shorter, please.")  # between the creator's load and save
    studio.do_update_draft(form)
    draft.refresh_from_db()
    assert (draft.review, draft.review_comment) == ("draft", "Shorter, please.")
    assert draft.persona.endswith("Edited.")


def test_an_edit_takes_a_submitted_draft_back_to_draft(client, creator):
    draft = studio.do_submit(creator, make_draft(creator))
    client.force_login(creator)
    response = client.put(
        f"{API}/avatars/{draft.slug}",
        {"name": "Wren", "persona": PERSONA + " New line."},
        content_type="application/json",
    )
    assert response.status_code == 200 and response.json()["review"] == "draft"


def test_a_submitted_draft_cannot_be_submitted_twice(creator):
    draft = studio.do_submit(creator, make_draft(creator))
    with pytest.raises(ValidationError, match="Only a draft"):
        studio.do_submit(creator, draft)


def test_a_return_sends_the_comment_to_the_creator(client, creator, organizer):
    draft = studio.do_submit(creator, make_draft(creator))
    client.force_login(organizer)
    refused = client.post(f"/studio/review/{draft.slug}/", {"return": "1", "comment": " "})
    assert b"Say what the creator should change." in refused.content
    client.post(f"/studio/review/{draft.slug}/", {"return": "1", "comment": "Shorter, please."})
    client.force_login(creator)
    body = client.get(f"{API}/avatars/{draft.slug}").json()
    assert (body["review"], body["review_comment"]) == ("returned", "Shorter, please.")
    assert b"Shorter, please." in client.get(f"/studio/{draft.slug}/").content
    # Returned, it can be submitted again.
    assert client.post(f"{API}/avatars/{draft.slug}/submit").json()["review"] == "submitted"


def test_approval_publishes_a_new_avatar_into_a_hunt(client, demo_hunt, creator, admin_user):
    draft = make_draft(creator)
    Conversation.objects.create(player=chat.Player.for_user(creator), avatar=draft, sandbox=True)
    studio.do_submit(creator, draft)
    client.force_login(admin_user)
    response = client.post(
        f"/studio/review/{draft.slug}/", {"approve": "1", "hunt": demo_hunt.pk, "comment": ""}
    )
    assert response.status_code == 302
    draft.refresh_from_db()
    assert (draft.published, draft.hunt, draft.review) == (True, demo_hunt, "approved")
    assert not Conversation.objects.filter(avatar=draft).exists()  # the sandbox went with it
    assert draft in demo_hunt.avatars.filter(published=True)


def test_approval_refuses_a_draft_holding_a_guarded_word_of_the_hunt(demo_hunt, creator):
    word = demo_hunt.guarded_words()[3]
    draft = studio.do_submit(creator, make_draft(creator, persona=f"You often say {word}."))
    with pytest.raises(ValidationError, match="contains a guarded word"):
        studio.do_approve(draft, demo_hunt)
    draft.refresh_from_db()
    assert (draft.published, draft.hunt, draft.review) == (False, None, "submitted")


def test_a_new_version_of_a_live_avatar_keeps_its_conversations_and_clues(
    client, demo_hunt, creator, make_player, admin_user
):
    marta = own_marta(creator)
    played = Conversation.objects.create(player=make_player("walker"), avatar=marta)
    clues = list(marta.clues.values_list("pk", flat=True))
    client.force_login(creator)
    copy_slug = client.post(f"{API}/avatars/{marta.slug}/revise").json()["slug"]
    # Asked twice (two tabs), there is still one working copy.
    assert client.post(f"{API}/avatars/{marta.slug}/revise").json()["slug"] == copy_slug
    copy = Avatar.objects.get(slug=copy_slug)
    assert (copy.hunt, copy.published, copy.clues.count()) == (None, False, 0)
    new_persona = marta.persona + " She now also hums old sea songs."
    edited = client.put(
        f"{API}/avatars/{copy_slug}",
        {"name": marta.name, "persona": new_persona, "greeting": marta.greeting},
        content_type="application/json",
    )
    assert edited.status_code == 200, edited.content
    client.post(f"{API}/avatars/{copy_slug}/submit")
    # While under review, players still talk to the live version.
    marta.refresh_from_db()
    assert marta.published and "sea songs" not in marta.persona
    client.force_login(admin_user)
    review = client.get(f"/studio/review/{copy_slug}/").content.decode()
    assert "+" in review and "sea songs" in review  # the diff against the live version
    client.post(f"/studio/review/{copy_slug}/", {"approve": "1", "comment": ""})
    marta.refresh_from_db()
    assert (marta.persona, marta.published, marta.hunt) == (new_persona, True, demo_hunt)
    assert list(marta.clues.values_list("pk", flat=True)) == clues
    assert Conversation.objects.filter(pk=played.pk, avatar=marta).exists()
    assert not Avatar.objects.filter(slug=copy_slug).exists()


def test_a_live_avatar_is_edited_only_through_its_working_copy(client, demo_hunt, creator):
    marta = own_marta(creator)
    client.force_login(creator)
    response = client.put(
        f"{API}/avatars/{marta.slug}",
        {"name": marta.name, "persona": "Changed."},
        content_type="application/json",
    )
    assert response.status_code == 409
    marta.refresh_from_db()
    assert marta.persona != "Changed."


def test_two_approvals_of_one_draft_publish_it_once(demo_hunt, creator):
    draft = studio.do_submit(creator, make_draft(creator))
    studio.do_approve(draft, demo_hunt)
    with pytest.raises(ValidationError, match="no longer waiting"):
        studio.do_approve(draft, None)


def test_the_review_shows_the_sandbox_transcript_and_checks(client, creator, admin_user):
    draft = make_draft(creator)
    _code, session = chat.open_conversation(creator, draft.slug)
    asked = Message.objects.create(
        conversation_id=session.conversation_id, role="player", text="Which way is the wind?"
    )
    Message.objects.create(
        conversation_id=session.conversation_id,
        role="avatar",
        text="From the west.",
        reply_to=asked,
    )
    studio.do_submit(creator, draft)
    client.force_login(admin_user)
    page = client.get(f"/studio/review/{draft.slug}/").content.decode()
    assert "Which way is the wind?" in page and "From the west." in page
    assert re.search(r"prompt budget: \d+ of \d+ tokens", page)


# --- the sandbox -------------------------------------------------------------------------------


def test_talking_to_a_draft_opens_a_sandbox_conversation(creator, demo_hunt, make_player):
    draft = make_draft(creator)
    _code, session = chat.open_conversation(creator, draft.slug)
    assert Conversation.objects.get(pk=session.conversation_id).sandbox
    # A published avatar's conversations are play.
    _code, played = chat.open_conversation(make_player("walker").user, "old-marta")
    assert not Conversation.objects.get(pk=played.conversation_id).sandbox


class Collect:
    """Stands in for the channel layer's publisher: keeps what a turn sends."""

    def __init__(self):
        self.events = []

    def send(self, group, event):
        self.events.append(event)


@pytest.mark.django_db(transaction=True)
def test_a_sandbox_turn_never_asks_the_gate_even_with_the_right_question(
    demo_hunt, creator, make_engine, monkeypatch, settings
):
    """The creator plays (not staff), the avatar guards a word of a live hunt and the question
    is its clue's: in a play conversation the gate would open it. In the sandbox, nothing."""
    settings.AVATAR_MAX_NEW_TOKENS = 8
    engine = make_engine()
    monkeypatch.setattr("avatars.engine.get_engine", lambda model=None: engine)

    def no_gate(message):
        raise AssertionError("the gate was asked for a sandbox turn")

    monkeypatch.setattr("hunt.gate.open_clues", no_gate)
    marta = own_marta(creator)
    Avatar.objects.filter(pk=marta.pk).update(published=False)
    word = demo_hunt.guarded_words()[3]
    _code, session = chat.open_conversation(creator, "old-marta")
    conversation = Conversation.objects.get(pk=session.conversation_id)
    assert conversation.sandbox and chat.Player.for_user(creator).plays
    message = Message.objects.create(
        conversation=conversation,
        role="player",
        text="What keeps the lighthouse lamp burning at night?",
        status="pending",
    )
    turns.run_turn(message.pk, Collect())
    message.refresh_from_db()
    assert message.status == "done"
    reply = Message.objects.get(reply_to=message)
    assert word not in reply.text.lower()
    assert not Discovery.objects.exists()


def test_clean_sandbox_deletes_only_old_sandbox_conversations(creator, demo_hunt, make_player):
    draft = make_draft(creator)
    walker = make_player("walker")
    old_sandbox = Conversation.objects.create(player=walker, avatar=draft, sandbox=True)
    new_sandbox = Conversation.objects.create(
        player=chat.Player.for_user(creator), avatar=draft, sandbox=True
    )
    old_play = Conversation.objects.create(
        player=walker, avatar=Avatar.objects.get(slug="old-marta")
    )
    long_ago = timezone.now() - timedelta(hours=49)
    Conversation.objects.filter(pk__in=[old_sandbox.pk, old_play.pk]).update(updated_at=long_ago)
    call_command("clean_sandbox", "--hours", "48")
    assert set(Conversation.objects.values_list("pk", flat=True)) == {new_sandbox.pk, old_play.pk}


def test_the_admin_counts_only_played_conversations(client, creator, admin_user, make_player):
    draft = make_draft(creator)
    Conversation.objects.create(player=make_player("a"), avatar=draft, sandbox=True)
    Conversation.objects.create(player=make_player("b"), avatar=draft)
    client.force_login(admin_user)
    page = client.get("/admin/avatars/avatar/")
    row = next(r for r in page.content.decode().split("<tr") if "Wren" in r)
    assert '<td class="field-conversations_count">1</td>' in row


# --- the API's document ------------------------------------------------------------------------


def test_the_openapi_document_lists_the_creator_endpoints(client):
    paths = client.get("/api/v1/openapi.json").json()["paths"]
    expected = {
        "/api/v1/creator/avatars": {"get", "post"},
        "/api/v1/creator/avatars/import": {"post"},
        "/api/v1/creator/avatars/{slug}": {"get", "put"},
        "/api/v1/creator/avatars/{slug}/card": {"get"},
        "/api/v1/creator/avatars/{slug}/portrait": {"post"},
        "/api/v1/creator/avatars/{slug}/revise": {"post"},
        "/api/v1/creator/avatars/{slug}/submit": {"post"},
        "/api/v1/creator/meter": {"post"},
    }
    for path, methods in expected.items():
        assert methods <= set(paths[path]), path
        assert all("creator" in paths[path][m]["tags"] for m in methods)


# --- the review's attack prompts ---------------------------------------------------------------


def test_submitting_queues_the_attack_prompts_after_commit(
    creator, django_capture_on_commit_callbacks, monkeypatch
):
    ran = []
    monkeypatch.setattr("avatars.tasks.run_review_attacks", ran.append)
    monkeypatch.setattr("avatars.tasks.local_pool", lambda: Now())
    draft = make_draft(creator)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        studio.do_submit(creator, draft)
    assert ran == []  # not before the submission is committed
    for callback in callbacks:
        callback()
    assert ran == [draft.pk]


class Now:
    """An executor that runs what it is given at once."""

    def submit(self, fn, *args):
        fn(*args)


def test_the_attack_prompts_run_on_the_draft_and_are_recorded(creator, make_engine, monkeypatch):
    engine = make_engine()
    monkeypatch.setattr("avatars.engine.get_engine", lambda model=None: engine)
    draft = studio.do_submit(creator, make_draft(creator))
    turns.run_review_attacks(draft.pk)
    draft.refresh_from_db()
    runs = draft.review_record["attacks"]
    assert [r["prompt"] for r in runs] == list(turns.REVIEW_ATTACKS)
    assert all(r["reply"] and r["leaked"] is False for r in runs)
    assert draft.review_record["transcript"] == []  # the submit's record is kept


class Parrot:
    """Stands in for the engine: always answers `text` (prompts built with a real tokenizer)."""

    def __init__(self, tokenizer, text: str):
        self.tokenizer, self.text = tokenizer, text

    def generate(self, ids, sampling):
        return SimpleNamespace(text=self.text)


def test_a_reply_leaking_a_word_of_the_live_hunt_is_flagged_and_withheld(
    demo_hunt, creator, tiny, monkeypatch
):
    word = demo_hunt.guarded_words()[3]
    monkeypatch.setattr(
        "avatars.engine.get_engine",
        lambda model=None: Parrot(tiny.tokenizer, f"Fine: it is {word}."),
    )
    copy = studio.do_revise(creator, own_marta(creator))
    studio.do_submit(creator, copy)
    turns.run_review_attacks(copy.pk)
    copy.refresh_from_db()
    runs = copy.review_record["attacks"]
    assert all(r["leaked"] and r["reply"] == turns.WITHHELD for r in runs)


def test_attack_replies_for_a_withdrawn_submission_are_dropped(creator, tiny, monkeypatch):
    monkeypatch.setattr(
        "avatars.engine.get_engine", lambda model=None: Parrot(tiny.tokenizer, "Hello.")
    )
    draft = studio.do_submit(creator, make_draft(creator))
    studio.do_update_draft(
        studio.DraftForm(data={"name": "Wren", "persona": PERSONA, "land": ""}, instance=draft)
    )
    turns.run_review_attacks(draft.pk)
    draft.refresh_from_db()
    assert "attacks" not in draft.review_record


def test_players_read_a_cards_greeting_with_its_placeholders_filled_in(
    client, demo_hunt, creator, make_player
):
    draft = make_draft(creator, greeting="Welcome, {{user}}! I am {{char}}.")
    studio.do_approve(studio.do_submit(creator, draft), demo_hunt)
    client.force_login(make_player("walker").user)
    shown = "Welcome, Visitor! I am Wren."
    assert shown in client.get(f"/hunts/{demo_hunt.slug}/avatars/").content.decode()
    assert shown in client.get(f"/chat/{draft.slug}/").content.decode()
    _code, session = chat.open_conversation(User.objects.get(username="walker"), draft.slug)
    assert chat.hello_frame(session.conversation_id)["avatar"]["greeting"] == shown


def test_an_organizer_gives_an_account_the_creator_role(client, organizer, make_user):
    newbie = make_user("newbie")
    client.force_login(organizer)
    assert client.post("/studio/review/", {"username": "nobody"}).status_code == 200
    assert client.post("/studio/review/", {"username": "newbie"}).status_code == 302
    assert studio.is_creator(newbie)


def test_a_creator_cannot_give_the_role(client, creator, make_user):
    newbie = make_user("newbie")
    client.force_login(creator)
    assert client.post("/studio/review/", {"username": "newbie"}).status_code == 403
    assert not studio.is_creator(newbie)


def test_a_new_portrait_reaches_the_live_avatar_on_approval_and_shows_to_players(
    client, demo_hunt, creator, make_player
):
    from tests.test_character_cards import image_bytes

    marta = own_marta(creator)
    copy = studio.do_revise(creator, marta)
    form = studio.DraftForm(data={f: getattr(copy, f) for f in studio.AUTHORED}, instance=copy)
    assert form.is_valid(), form.errors
    studio.do_update_draft(form, cards.read_portrait(image_bytes("PNG")))
    client.force_login(make_player("walker").user)
    assert client.get("/avatars/old-marta/portrait.png").status_code == 404  # not yet
    studio.do_approve(studio.do_submit(creator, Avatar.objects.get(pk=copy.pk)))
    assert client.get("/avatars/old-marta/portrait.png").status_code == 200
    assert 'class="portrait"' in client.get(f"/hunts/{demo_hunt.slug}/avatars/").content.decode()
    assert Portrait.objects.count() == 1  # stored once, named by the draft and the live avatar


def test_clean_sandbox_deletes_old_portraits_no_avatar_uses(creator):
    from tests.test_character_cards import image_bytes

    used = Portrait.store(cards.read_portrait(image_bytes("PNG", (10, 10))))
    make_draft(creator, portrait=used)
    unused = Portrait.store(cards.read_portrait(image_bytes("PNG", (20, 20))))
    fresh = Portrait.store(cards.read_portrait(image_bytes("PNG", (30, 30))))
    Portrait.objects.exclude(digest=fresh).update(created_at=timezone.now() - timedelta(days=3))
    call_command("clean_sandbox")
    assert set(Portrait.objects.values_list("digest", flat=True)) == {used, fresh}
    assert unused not in Portrait.objects.values_list("digest", flat=True)
