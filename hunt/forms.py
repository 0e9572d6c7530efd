"""Accounts and claims, shared by the web pages and the REST API (hunt/api.py)."""

from __future__ import annotations

import re

from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.forms import AuthenticationForm
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from hunt.models import Hunt, Player
from lostwallet import addresses, ratelimit

# Login, token and sign-up attempts: 10 a minute per address (contract §4); failed passwords,
# 10 a minute per username, from everywhere (sign_in_wait).
ATTEMPTS_PER_MINUTE = 10
# How long an address stays marked as having failed a username's password.
FAILED_SIGN_IN_MEMORY = 15 * 60


def address_bucket(request) -> str:
    """What per-address limits count under: the client's address (lostwallet.asgi puts it in
    REMOTE_ADDR, read past TRUSTED_PROXIES), an IPv6 one by its /64."""
    return addresses.bucket(request.META.get("REMOTE_ADDR"))


def attempt_wait(request, action: str) -> float | None:
    """Counts one sign-in or sign-up attempt of this address; seconds to wait when over the
    limit, else None."""
    return ratelimit.hit(
        f"{action}:addr:{address_bucket(request)}", ATTEMPTS_PER_MINUTE, ATTEMPTS_PER_MINUTE
    )


def _failed_key(request, username: str) -> str:
    return f"login:failed:{username.strip().casefold()}:{address_bucket(request)}"


def _username_key(username: str) -> str:
    return f"login:user:{username.strip().casefold()}"


def sign_in_wait(request, username: str) -> float | None:
    """Counts one sign-in attempt (page or token) before the password is checked; seconds to
    wait when it is refused, else None.

    Each address has its own budget (attempt_wait). Failed passwords of a username also count
    from everywhere (record_failed_sign_in); once they run over the limit, every address that
    has itself failed for that username waits its turn. An address that has not failed is
    still judged by its password: a rival's guesses must never lock the owner out, which a
    plain per-username limit did (ten wrong passwords from anywhere refused the right one).
    """
    wait = attempt_wait(request, "login")
    if wait is None and username and cache.get(_failed_key(request, username)):
        wait = ratelimit.peek(_username_key(username), ATTEMPTS_PER_MINUTE, ATTEMPTS_PER_MINUTE)
    return wait


def record_failed_sign_in(request, username: str) -> None:
    """Marks this address as having failed `username` and counts the failure for the name."""
    if username:
        cache.set(_failed_key(request, username), True, FAILED_SIGN_IN_MEMORY)
        ratelimit.hit(_username_key(username), ATTEMPTS_PER_MINUTE, ATTEMPTS_PER_MINUTE)


def too_many_attempts(wait: float) -> str:
    seconds = ratelimit.retry_after_seconds(wait)
    return ngettext(
        "Too many attempts. Try again in %(n)d second.",
        "Too many attempts. Try again in %(n)d seconds.",
        seconds,
    ) % {"n": seconds}


class SignUpForm(forms.Form):
    """The fields of `POST /api/v1/auth/register`; `save()` creates the account and player."""

    username = forms.CharField(
        label=_("Username"),
        max_length=150,
        widget=forms.TextInput(attrs={"autocomplete": "username", "autocapitalize": "none"}),
    )
    display_name = forms.CharField(
        label=_("Display name"),
        max_length=60,
        required=False,
        help_text=_("Shown on the leaderboard. Your username is used when empty."),
    )
    password = forms.CharField(
        label=_("Password"),
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )

    def clean_username(self) -> str:
        User = get_user_model()
        username = User.normalize_username(self.cleaned_data["username"].strip())
        User._meta.get_field("username").run_validators(username)
        if User.objects.filter(username__iexact=username).exists():
            raise forms.ValidationError(_("This username is taken."), code="taken")
        return username

    def clean(self) -> dict:
        cleaned = super().clean()
        if cleaned.get("password"):
            # Checked even when the username is refused, so every problem shows at once.
            user = get_user_model()(username=cleaned.get("username") or self.data.get("username"))
            try:
                password_validation.validate_password(cleaned["password"], user)
            except forms.ValidationError as exc:
                self.add_error("password", exc)
        return cleaned

    def save(self):
        """Creates the account. Race: the same name registered twice at once passes both
        checks; the unique username column refuses the second insert, reported as taken."""
        User = get_user_model()
        data = self.cleaned_data
        try:
            with transaction.atomic():
                user = User.objects.create_user(
                    username=data["username"], password=data["password"]
                )
                player = Player.for_user(user)
                if data.get("display_name"):
                    player.display_name = data["display_name"].strip()
                    player.save(update_fields=["display_name"])
        except IntegrityError:
            self.add_error("username", forms.ValidationError(_("This username is taken.")))
            return None
        return user

    def error_text(self) -> str:
        """All errors on one line, for the API's `detail`."""
        return " ".join(
            f"{field}: {message}" if field != "__all__" else str(message)
            for field, messages in self.errors.items()
            for message in messages
        )


class WebSignUpForm(SignUpForm):
    """The sign-up page asks for the password twice; the API trusts its clients to."""

    password_again = forms.CharField(
        label=_("Password again"),
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )

    def clean(self) -> dict:
        cleaned = super().clean()
        # The raw value: a password refused above has left cleaned_data already.
        password = self.data.get("password")
        if password and "password_again" in cleaned and password != cleaned["password_again"]:
            self.add_error("password_again", _("The two passwords differ."))
        return cleaned


class SignInForm(AuthenticationForm):
    """Django's login form with the attempt limits (sign_in_wait) checked before the password."""

    def clean(self) -> dict:
        username = self.data.get("username", "")
        wait = sign_in_wait(self.request, username)
        if wait is not None:
            raise forms.ValidationError(too_many_attempts(wait), code="rate_limited")
        try:
            return super().clean()
        except forms.ValidationError:
            record_failed_sign_in(self.request, username)
            raise


def registration_is_open() -> bool:
    """Accounts may be created when the REGISTRATION_OPEN setting allows it (on by default)
    and some hunt that has not ended still takes new players (its `registration_open`)."""
    return bool(getattr(settings, "REGISTRATION_OPEN", True)) and (
        Hunt.objects.filter(registration_open=True, ends_at__gt=timezone.now()).exists()
    )


class ClaimForm(forms.Form):
    phrase = forms.CharField(
        label=_("The 24 words"),
        widget=forms.Textarea(
            attrs={
                "rows": 5,
                "autocomplete": "off",
                "autocapitalize": "none",
                "spellcheck": "false",
                "aria-describedby": "phrase-help",
            }
        ),
        help_text=_("In order, separated by spaces or new lines."),
    )

    def words(self) -> list[str]:
        """Every claim, even of the wrong length, is judged (and counted) by do_claim."""
        return [w for w in re.split(r"[\s,;]+", self.cleaned_data["phrase"]) if w]
