from __future__ import annotations

from django.apps import AppConfig
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_out
from django.db.models.signals import post_save, pre_save


class HuntConfig(AppConfig):
    name = "hunt"
    verbose_name = "Hunts"

    def ready(self) -> None:
        from hunt import accounts

        user_model = get_user_model()
        pre_save.connect(accounts.note_access_change, sender=user_model)
        post_save.connect(accounts.end_access, sender=user_model)
        user_logged_out.connect(accounts.signed_out)
