from __future__ import annotations

from django.apps import AppConfig


class HuntConfig(AppConfig):
    name = "hunt"
    verbose_name = "Hunts"
