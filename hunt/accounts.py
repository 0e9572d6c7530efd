"""When an account's access ends, its API tokens go with it.

A password change revokes every token of the account: a token must not outlive the password
that was given for it (a player who changes a leaked password expects every stolen credential
to stop working). It hooks the user model's save, not the password-change views, so that every
path is covered: the pages, the admin, `manage.py changepassword`, a shell. A password hasher
upgrade at sign-in rewrites the hash too and so revokes the tokens as well: rare, and a client
only signs in again. `QuerySet.update()` bypasses save and these hooks.
"""

from __future__ import annotations

from hunt.models import ApiToken


def note_access_change(sender, instance, update_fields=None, **kwargs) -> None:
    """pre_save of the user: remembers on the instance whether its password is changing."""
    instance._password_changed = False
    if instance.pk is None or (update_fields is not None and "password" not in update_fields):
        return
    stored = sender._default_manager.filter(pk=instance.pk).values_list("password", flat=True)
    instance._password_changed = stored.first() not in (None, instance.password)


def end_access(sender, instance, created=False, **kwargs) -> None:
    """post_save of the user: a changed password revokes every API token."""
    if getattr(instance, "_password_changed", False):
        ApiToken.objects.filter(user=instance).delete()
