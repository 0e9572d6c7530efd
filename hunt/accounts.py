"""When an account's access ends, its API tokens and open sockets go with it.

- A password change revokes every API token of the account: a token must not outlive the
  password that was given for it (a player who changes a leaked password expects every stolen
  credential to stop working).
- Signing out, deactivation and a password change close the account's open sockets (chat and
  leaderboard) with 4401 "not authenticated": the handshake was the only check, so without this
  a banned player would chat on for as long as the socket stays up. Each authenticated socket
  joins the group `user.<id>` (`AccountSocket`); the `session.end` event is sent after commit.

Both hook the user model's save, not the views that change it, so every path is covered: the
pages, the admin, `manage.py changepassword`, a shell. A password hasher upgrade at sign-in
rewrites the hash too, and so also revokes the tokens: rare, and a client only signs in again.
`QuerySet.update()` bypasses save and these hooks.
"""

from __future__ import annotations

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from hunt.models import ApiToken
from lostwallet.wire import CloseCode


def account_group(user_id: int) -> str:
    return f"user.{user_id}"


def end_sockets(user_id: int) -> None:
    """Closes every open socket of the account, once the current transaction commits."""

    def send() -> None:
        async_to_sync(get_channel_layer().group_send)(
            account_group(user_id), {"type": "session.end"}
        )

    transaction.on_commit(send)


def note_access_change(sender, instance, update_fields=None, **kwargs) -> None:
    """pre_save of the user: remembers on the instance whether its password changes and whether
    it is being deactivated."""
    instance._password_changed = instance._deactivated = False
    if instance.pk is None or (
        update_fields is not None and not {"password", "is_active"} & set(update_fields)
    ):
        return
    stored = sender._default_manager.filter(pk=instance.pk).values("password", "is_active").first()
    if stored is not None:
        instance._password_changed = stored["password"] != instance.password
        instance._deactivated = stored["is_active"] and not instance.is_active


def end_access(sender, instance, created=False, **kwargs) -> None:
    """post_save of the user: a changed password revokes every API token; it and a
    deactivation close the account's sockets."""
    if getattr(instance, "_password_changed", False):
        ApiToken.objects.filter(user=instance).delete()
    if getattr(instance, "_password_changed", False) or getattr(instance, "_deactivated", False):
        end_sockets(instance.pk)


def signed_out(sender, request, user, **kwargs) -> None:
    """user_logged_out: the account's sockets close (a signed-out browser's socket would
    otherwise stay signed in)."""
    if user is not None:
        end_sockets(user.pk)


class AccountSocket:
    """Consumer mixin: an authenticated socket joins its account's group and closes with 4401
    on `session.end`. Join before accept(): an event sent between the handshake's
    authentication and the join is missed, as it would be by any socket opened a moment
    earlier, and the next handshake is refused anyway."""

    account_group = ""

    async def join_account_group(self) -> None:
        user = self.scope.get("user")
        if user is not None and user.is_authenticated:
            self.account_group = account_group(user.pk)
            await self.channel_layer.group_add(self.account_group, self.channel_name)

    async def leave_account_group(self) -> None:
        if self.account_group:
            await self.channel_layer.group_discard(self.account_group, self.channel_name)

    async def session_end(self, event: dict) -> None:
        await self.close(CloseCode.NOT_AUTHENTICATED.value)
