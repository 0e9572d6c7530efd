"""Settings for Lost Wallet, read from the environment.

Defaults make `clone -> make demo` work on one machine: SQLite under var/, the in-memory channel
layer, generation jobs in-process and the packaged default model. DEBUG is off unless turned on
(`make demo` and `make test` set DEBUG=1), so a production host that forgets a secret refuses to
start instead of running with a public one. Production sets DATABASE_URL, REDIS_URL, SECRET_KEY
and ENCRYPTION_KEY (see README's configuration table and docs/security.md).
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean; use 1/0, true/false, yes/no.")


def env_int(name: str, default: int, minimum: int = 0) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer.") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be at least {minimum}.")
    return value


def env_float(name: str, default: float) -> float:
    raw = env_str(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} must be a number") from None


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


def env_header(name: str) -> tuple[str, str] | None:
    """An HTTP header name (e.g. X-Forwarded-Proto) as a SECURE_PROXY_SSL_HEADER whose value
    must be "https"; None when unset."""
    header = env_str(name)
    if not header:
        return None
    if not re.fullmatch(r"[A-Za-z0-9-]+", header):
        raise ImproperlyConfigured(
            f"{name}={header!r} is not a header name (e.g. X-Forwarded-Proto)."
        )
    return "HTTP_" + header.upper().replace("-", "_"), "https"


def env_networks(name: str) -> list[str]:
    """A comma-separated list of IP addresses or CIDR networks, each checked."""
    entries = env_list(name, "")
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ImproperlyConfigured(f"{name}: {entry!r} is not an address or network.") from None
    return entries


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env_str(name, default).lower()
    if value not in choices:
        raise ImproperlyConfigured(f"{name}={value!r} must be one of {', '.join(choices)}.")
    return value


DEBUG = env_bool("DEBUG", False)

SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    SECRET_KEY = "dev-only-insecure-secret-key-never-use-in-production"

# Guarded seed words are encrypted at rest with these keys (hunt/crypto.py): Fernet keys or
# passphrases, comma-separated, newest first (the first encrypts, any decrypts). They are separate
# from SECRET_KEY so that rotating session signing does not make every hunt unreadable. The
# development key's "dev-only-" prefix makes hunt/crypto.py log that it is one.
ENCRYPTION_KEY = ",".join(env_list("ENCRYPTION_KEY", ""))
if not ENCRYPTION_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("ENCRYPTION_KEY must be set when DEBUG is off.")
    ENCRYPTION_KEY = "dev-only-" + SECRET_KEY

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")
# Reverse proxies whose X-Forwarded-For is believed (lostwallet/addresses.py); empty: the TCP
# peer is the client. Run Daphne without --proxy-headers when this is set.
TRUSTED_PROXIES = env_networks("TRUSTED_PROXIES")

VAR_DIR = Path(env_str("VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    # Only for its static files: the API docs page (/api/v1/docs) then works offline.
    "ninja",
    "hunt",
    "avatars",
    "console",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "lostwallet.urls"
ASGI_APPLICATION = "lostwallet.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.i18n",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'lostwallet.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not memory, so that the Daphne and Celery processes of integration tests can
    # share the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
    # Several threads (web, in-process generation jobs) write to one file: wait for the lock
    # instead of failing at once, and let readers run beside a writer.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL;",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Redis, when configured, is the Celery broker, the channel layer and the shared cache (rate
# limits, leaderboard). Without it everything runs in this one process.


def channel_layer_host(url: str) -> dict:
    """A channels_redis host entry for `url` (also used by tests that build their own layer).

    redis-py 8 reads with a 5 s socket timeout by default, the same as channels_redis' blocking
    BRPOP: every idle socket's receive loop would time out and its connection die with 1011.
    Reads get room beyond the BRPOP. After a Redis restart the pooled connections are dead: a
    command retries once on a fresh one instead of failing the turn that sent it.
    """
    from redis.exceptions import ConnectionError as RedisConnectionError

    return {"address": url, "socket_timeout": 15, "retry_on_error": [RedisConnectionError]}


REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [channel_layer_host(REDIS_URL)], "capacity": 1500, "expiry": 60},
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env_str("CACHE_PREFIX", "lostwallet"),
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ROUTES = {
    "avatars.tasks.generate_reply": {"queue": "generation"},
    # The review's attack prompts (avatars/studio.py) need the model too.
    "avatars.tasks.review_attacks": {"queue": "generation"},
    "avatars.tasks.train_version": {"queue": "training"},
    "avatars.tasks.certify_version": {"queue": "training"},
}
# One message at a time per worker slot: generation jobs are long, prefetching would park
# players behind a busy slot while another worker idles.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A job whose worker died is redelivered after this many seconds (Redis transport).
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 300)}
GENERATION_THREADS = env_int("GENERATION_THREADS", 16, minimum=1)
# Conversation affinity (avatars/affinity.py): each worker also consumes its own queue, and a
# conversation's next turn goes to the worker that served its last one while that one lives.
GENERATION_AFFINITY = env_bool("GENERATION_AFFINITY", False)
# Workers append per-turn serving figures to Redis for `loadtest` (avatars/turnlog.py).
GENERATION_TURN_LOG = env_bool("GENERATION_TURN_LOG", False)

# The avatar model: "smollm2-135m" (packaged default), a local Hugging Face folder, or
# "tiny-random" for fast tests. Never a hub name: production hosts are offline.
AVATAR_MODEL = env_str("AVATAR_MODEL", "smollm2-135m")
AVATAR_DEVICE = env_choice("AVATAR_DEVICE", "auto", ("auto", "cpu", "cuda"))
AVATAR_PROMPT_BUDGET = env_int("AVATAR_PROMPT_BUDGET", 768, minimum=128)
AVATAR_MAX_NEW_TOKENS = env_int("AVATAR_MAX_NEW_TOKENS", 96, minimum=8)
AVATAR_MAX_BATCH = env_int("AVATAR_MAX_BATCH", 16, minimum=1)
# Torch CPU threads (0: torch's default, one per core); on a shared 2-core host 1 is often faster.
AVATAR_THREADS = env_int("AVATAR_THREADS", 0)
# Prompt tokens processed per step while other replies decode (smaller: smoother streams).
AVATAR_PREFILL_CHUNK = env_int("AVATAR_PREFILL_CHUNK", 256, minimum=16)
# Tokens of finished conversations kept for prefix reuse (persona and last turn).
AVATAR_PREFIX_CACHE_TOKENS = env_int("AVATAR_PREFIX_CACHE_TOKENS", 12_000)

# Model versions (avatars/versions.py): fine-tuning and certification run on the `training`
# queue. Certification asks each avatar a fixed sample of CERTIFY_ATTACKS prompts of the attack
# suites in ATTACKS_DIR (0: all of them), and fails a version whose rates are worse than the
# active version's by more than CERTIFY_TOLERANCE for any avatar.
ATTACKS_DIR = Path(env_str("ATTACKS_DIR", str(BASE_DIR.parent / "shared" / "attacks")))
CERTIFY_ATTACKS = env_int("CERTIFY_ATTACKS", 8, minimum=0)
CERTIFY_TOLERANCE = env_float("CERTIFY_TOLERANCE", 0.10)

# The clue gate's second stage for close calls (hunt/verifiers.py): "cross" (the trained
# cross-encoder, CPU), "judge" (the avatar model, for capable models on GPU), "none", or a path.
GATE_VERIFIER = env_str("GATE_VERIFIER", "cross")
GATE_VERIFIER_DIR = Path(env_str("GATE_VERIFIER_DIR", str(VAR_DIR / "models" / "gate-verifier")))

CHAT_MAX_CHARS = env_int("CHAT_MAX_CHARS", 500, minimum=1)
# What a crowd, a player or an address can make the server spend (docs/protocol.md, Limits).
# A say is counted in the model's tokens too: 500 rare characters are 2,000 tokens. The default
# is the prompt room (avatars/engine/prompts.py) left beside the largest persona allowed.
CHAT_MAX_TOKENS = env_int("CHAT_MAX_TOKENS", 256, minimum=1)
# Player messages pending or generating, all conversations together, before a say is refused
# (`overloaded`): past it, new turns would only wait out GENERATION_QUEUE_TIMEOUT and fail.
MAX_WAITING_TURNS = env_int("MAX_WAITING_TURNS", 200, minimum=1)
# Open WebSockets (chat and leaderboard) per account and per client address.
WS_MAX_PER_USER = env_int("WS_MAX_PER_USER", 8, minimum=1)
WS_MAX_PER_ADDRESS = env_int("WS_MAX_PER_ADDRESS", 64, minimum=1)
# Messages in the chat socket's `hello`; older ones are paged over REST. 0 (the default) sends
# every stored message, as the client contract (§3.1) promises after a reconnect; a bound is an
# operator's choice that clients must then page around (they see `history_more`).
HELLO_HISTORY_LIMIT = env_int("HELLO_HISTORY_LIMIT", 0, minimum=0)
# Turn deadlines (avatars/turns.py): a generation may run GENERATION_TIME_LIMIT seconds; a turn
# no worker claimed within GENERATION_QUEUE_TIMEOUT seconds, or whose claim is older than the
# time limit plus 30 s (its worker died), is failed (`generation_failed`) by the chat socket's
# watcher, so a lost job never means silence.
GENERATION_TIME_LIMIT = env_int("GENERATION_TIME_LIMIT", 120, minimum=10)
GENERATION_QUEUE_TIMEOUT = env_int("GENERATION_QUEUE_TIMEOUT", 180, minimum=1)

# New accounts: off closes sign-up everywhere; when on, a hunt that has not ended and has
# `registration_open` must exist too (hunt/forms.py registration_is_open).
REGISTRATION_OPEN = env_bool("REGISTRATION_OPEN", True)
LEADERBOARD_ROWS = env_int("LEADERBOARD_ROWS", 100, minimum=1)
# The organizers' console (console/views.py figures_for) refreshes its figures in the background
# once they are CONSOLE_CACHE_SECONDS old, at most one refresh per hunt (and audience) however
# many organizers watch, and computes them in the request only when older than
# CONSOLE_STALE_SECONDS; its page polls every CONSOLE_POLL_SECONDS.
CONSOLE_CACHE_SECONDS = env_int("CONSOLE_CACHE_SECONDS", 2, minimum=0)
CONSOLE_STALE_SECONDS = env_int("CONSOLE_STALE_SECONDS", 60, minimum=1)
CONSOLE_POLL_SECONDS = env_int("CONSOLE_POLL_SECONDS", 4, minimum=1)
# Days a bearer token from /api/v1/auth/token or /auth/register works (hunt.models.ApiToken).
API_TOKEN_TTL_DAYS = env_int("API_TOKEN_TTL_DAYS", 30, minimum=1)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "home"

LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("fr", "Français")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]

# HTTPS only when DEBUG is off; `manage.py check --deploy` passes with these defaults. A proxy
# that terminates TLS names the header through which it tells Django so (SECURE_PROXY_SSL_HEADER,
# e.g. X-Forwarded-Proto, whose value is then "https"); without it every request would look like
# plain HTTP and be redirected forever. Set it only when the proxy always overwrites that header:
# otherwise a client could claim HTTPS itself. HSTS makes browsers refuse plain HTTP for a year,
# subdomains included; preload lets the domain be submitted to the browsers' built-in list
# (docs/security.md says when to turn these down).
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SECURE_PROXY_SSL_HEADER = env_header("SECURE_PROXY_SSL_HEADER")
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", not DEBUG)
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO").upper()},
    "loggers": {"django.channels.server": {"level": "WARNING"}},
}
