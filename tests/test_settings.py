"""settings.py reads the environment and fails loudly on bad values."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

PROBE = (
    "import django; from django.conf import settings; django.setup(); "
    "print(settings.CHANNEL_LAYERS['default']['BACKEND'], settings.CACHES['default']['BACKEND'], "
    "settings.DATABASES['default']['ENGINE'], settings.AVATAR_MODEL, settings.DEBUG)"
)


def load_settings(**env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    base.update({"DJANGO_SETTINGS_MODULE": "lostwallet.settings", **env})
    return subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=base, capture_output=True, text=True
    )


def test_the_defaults_run_embedded_on_sqlite():
    result = load_settings()
    assert result.returncode == 0, result.stderr
    layer, cache, engine, model, debug = result.stdout.split()
    assert layer == "channels.layers.InMemoryChannelLayer"
    assert cache.endswith("LocMemCache")
    assert engine == "django.db.backends.sqlite3"
    assert model == "smollm2-135m"
    assert debug == "True"


def test_redis_url_switches_to_redis_layer_and_cache():
    result = load_settings(REDIS_URL="redis://127.0.0.1:6379/3")
    assert result.returncode == 0, result.stderr
    assert "channels_redis.core.RedisChannelLayer" in result.stdout
    assert "RedisCache" in result.stdout


def test_database_url_selects_postgresql():
    result = load_settings(DATABASE_URL="postgres://u:p@db.example:5432/lw")
    assert result.returncode == 0, result.stderr
    assert "django.db.backends.postgresql" in result.stdout


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DEBUG": "maybe"}, "DEBUG='maybe' is not a boolean"),
        ({"DEBUG": "0"}, "SECRET_KEY must be set when DEBUG is off"),
        ({"DEBUG": "0", "SECRET_KEY": "x" * 50}, "ENCRYPTION_KEY must be set when DEBUG is off"),
        ({"AVATAR_DEVICE": "gpu"}, "AVATAR_DEVICE='gpu' must be one of auto, cpu, cuda"),
        ({"AVATAR_PROMPT_BUDGET": "lots"}, "AVATAR_PROMPT_BUDGET='lots' is not an integer"),
        ({"AVATAR_PROMPT_BUDGET": "16"}, "AVATAR_PROMPT_BUDGET=16 must be at least 128"),
        ({"TRUSTED_PROXIES": "10.0.0.0/8,proxy"}, "TRUSTED_PROXIES: 'proxy' is not an address"),
        ({"API_TOKEN_TTL_DAYS": "0"}, "API_TOKEN_TTL_DAYS=0 must be at least 1"),
    ],
)
def test_bad_values_fail_loudly(env, message):
    result = load_settings(**env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert message in result.stderr


def test_production_settings_load_with_every_secret_set():
    result = load_settings(DEBUG="0", SECRET_KEY="s" * 50, ENCRYPTION_KEY="e" * 40)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == "False"
