from __future__ import annotations

from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    """The organizers' live console: reads both apps, neither of which reads it."""

    name = "console"
    verbose_name = "Live console"
