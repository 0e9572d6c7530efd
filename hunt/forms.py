"""Accounts and claims, shared by the web pages and the REST API (hunt/api.py)."""

from __future__ import annotations

import re

from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.forms import AuthenticationForm
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from hunt.models import Hunt, Player
from lostwallet import addresses, ratelimit

# Login, token and sign-up attempts: 10 a minute per username and per address (contract §4).
ATTEMPTS_PER_MINUTE = 10


def address_bucket(request) -> str:
    """What per-address limits count under: the client's address (lostwallet.asgi puts it in
    REMOTE_ADDR, read past TRUSTED_PROXIES), an IPv6 one by its /64."""
    return addresses.bucket(request.META.get("REMOTE_ADDR"))


def attempt_wait(request, username: str | None = None, action: str = "login") -> float | None:
    """Counts one login/sign-up attempt; seconds to wait when over the limit, else None.

    Counted per address and, when a username is given, per username too, so that one address
    cannot spray many accounts and many addresses cannot hammer one account.
    """
    keys = [f"{action}:addr:{address_bucket(request)}"]
    if username:
        keys.append(f"{action}:user:{username.strip().casefold()}")
    for key in keys:
        wait = ratelimit.hit(key, ATTEMPTS_PER_MINUTE, ATTEMPTS_PER_MINUTE)
        if wait is not None:
            return wait
    return None


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
    """Django's login form with the attempt limit checked before the password."""

    def clean(self) -> dict:
        wait = attempt_wait(self.request, self.data.get("username", ""))
        if wait is not None:
            raise forms.ValidationError(too_many_attempts(wait), code="rate_limited")
        return super().clean()


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
