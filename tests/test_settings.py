"""settings.py reads the environment and fails loudly on bad values."""

from __future__ import annotations

import json
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

# What README's "Running in production" sets, behind a proxy that terminates TLS; no
# DATABASE_URL: `check --deploy` needs no database, so SQLite stands in for PostgreSQL.
PRODUCTION_ENV = {
    "DEBUG": "0",
    "SECRET_KEY": "k3v9-Qm2x!Lr8Zt5+Wb7@Np4Yc6&Hd1Jf0Gs(Ua)Ve=Xi^Ko*Py%Rl#Tn",
    "ENCRYPTION_KEY": "iwX4ObNNmEB_FJeL4X14F85qWiqXxNBa132Is-bIKsg=",
    "ALLOWED_HOSTS": "hunt.example.org",
    "CSRF_TRUSTED_ORIGINS": "https://hunt.example.org",
    "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto",
}


def run_python(*args: str, **env: str) -> subprocess.CompletedProcess:
    """`python *args` with the settings of `env` alone: what `make test` or a developer's
    shell set (DEBUG=1, keys, services, HTTPS switches) is left out."""
    inherited = {"DEBUG", "SECRET_KEY", "ENCRYPTION_KEY", "DATABASE_URL", "REDIS_URL"}
    base = {
        k: v for k, v in os.environ.items() if k not in inherited and not k.startswith("SECURE_")
    }
    base.update({"DJANGO_SETTINGS_MODULE": "lostwallet.settings", **env})
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=base, capture_output=True, text=True
    )


def load_settings(**env: str) -> subprocess.CompletedProcess:
    return run_python("-c", PROBE, **env)


def read_settings(*names: str, **env: str) -> dict:
    probe = (
        "import json, django; from django.conf import settings; django.setup(); "
        f"print(json.dumps({{n: getattr(settings, n) for n in {names!r}}}))"
    )
    result = run_python("-c", probe, **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_debug_is_off_unless_turned_on():
    assert read_settings("DEBUG", SECRET_KEY="s" * 50, ENCRYPTION_KEY="e" * 40) == {"DEBUG": False}


def test_the_defaults_run_embedded_on_sqlite():
    result = load_settings(DEBUG="1")
    assert result.returncode == 0, result.stderr
    layer, cache, engine, model, debug = result.stdout.split()
    assert layer == "channels.layers.InMemoryChannelLayer"
    assert cache.endswith("LocMemCache")
    assert engine == "django.db.backends.sqlite3"
    assert model == "smollm2-135m"
    assert debug == "True"


def test_redis_url_switches_to_redis_layer_and_cache():
    result = load_settings(DEBUG="1", REDIS_URL="redis://127.0.0.1:6379/3")
    assert result.returncode == 0, result.stderr
    assert "channels_redis.core.RedisChannelLayer" in result.stdout
    assert "RedisCache" in result.stdout


def test_database_url_selects_postgresql():
    result = load_settings(DEBUG="1", DATABASE_URL="postgres://u:p@db.example:5432/lw")
    assert result.returncode == 0, result.stderr
    assert "django.db.backends.postgresql" in result.stdout


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DEBUG": "maybe"}, "DEBUG='maybe' is not a boolean"),
        ({}, "SECRET_KEY must be set when DEBUG is off"),
        ({"DEBUG": "0"}, "SECRET_KEY must be set when DEBUG is off"),
        ({"SECRET_KEY": "x" * 50}, "ENCRYPTION_KEY must be set when DEBUG is off"),
        ({"SECRET_KEY": "x" * 50, "ENCRYPTION_KEY": " , "}, "ENCRYPTION_KEY must be set"),
        (
            {"DEBUG": "1", "AVATAR_DEVICE": "gpu"},
            "AVATAR_DEVICE='gpu' must be one of auto, cpu, cuda",
        ),
        (
            {"DEBUG": "1", "AVATAR_PROMPT_BUDGET": "lots"},
            "AVATAR_PROMPT_BUDGET='lots' is not an integer",
        ),
        (
            {"DEBUG": "1", "AVATAR_PROMPT_BUDGET": "16"},
            "AVATAR_PROMPT_BUDGET=16 must be at least 128",
        ),
        (
            {"DEBUG": "1", "TRUSTED_PROXIES": "10.0.0.0/8,proxy"},
            "TRUSTED_PROXIES: 'proxy' is not an address",
        ),
        ({"DEBUG": "1", "API_TOKEN_TTL_DAYS": "0"}, "API_TOKEN_TTL_DAYS=0 must be at least 1"),
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


def test_the_documented_production_environment_passes_the_deployment_checks():
    result = run_python(
        "manage.py", "check", "--deploy", "--fail-level", "WARNING", **PRODUCTION_ENV
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert "no issues" in result.stdout


HTTPS = (
    "SECURE_SSL_REDIRECT",
    "SECURE_PROXY_SSL_HEADER",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD",
    "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE",
)


def test_production_is_https_only_by_default():
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != "SECURE_PROXY_SSL_HEADER"}
    assert read_settings(*HTTPS, **env) == {
        "SECURE_SSL_REDIRECT": True,
        "SECURE_PROXY_SSL_HEADER": None,
        "SECURE_HSTS_SECONDS": 31_536_000,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
        "SECURE_HSTS_PRELOAD": True,
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
    }


def test_development_serves_plain_http():
    assert read_settings(*HTTPS, DEBUG="1") == {
        "SECURE_SSL_REDIRECT": False,
        "SECURE_PROXY_SSL_HEADER": None,
        "SECURE_HSTS_SECONDS": 0,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": False,
        "SECURE_HSTS_PRELOAD": False,
        "SESSION_COOKIE_SECURE": False,
        "CSRF_COOKIE_SECURE": False,
    }


def test_the_https_settings_follow_the_environment():
    values = read_settings(
        *HTTPS,
        **PRODUCTION_ENV,
        SECURE_SSL_REDIRECT="0",
        SECURE_HSTS_SECONDS="3600",
        SECURE_HSTS_INCLUDE_SUBDOMAINS="0",
        SECURE_HSTS_PRELOAD="no",
    )
    assert values["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert values["SECURE_SSL_REDIRECT"] is False
    assert values["SECURE_HSTS_SECONDS"] == 3600
    assert values["SECURE_HSTS_INCLUDE_SUBDOMAINS"] is False
    assert values["SECURE_HSTS_PRELOAD"] is False


def test_a_malformed_proxy_header_fails_loudly():
    result = load_settings(DEBUG="1", SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto: https")
    assert result.returncode != 0
    assert "SECURE_PROXY_SSL_HEADER='X-Forwarded-Proto: https' is not a header name" in (
        result.stderr
    )
