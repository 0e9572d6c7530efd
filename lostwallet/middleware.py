"""ASGI middleware: the client's address for every connection; origin and bearer checks for the
WebSocket routes."""

from __future__ import annotations

from urllib.parse import urlsplit

from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http.request import split_domain_port, validate_host

from lostwallet.addresses import client_address

DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(url: str) -> tuple[str, str, int | None] | None:
    """(scheme, host as ALLOWED_HOSTS writes it, port) of an origin; None when malformed."""
    try:
        parts = urlsplit(url.strip().lower())
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return None
    host = parts.hostname or ""
    return parts.scheme, f"[{host}]" if ":" in host else host, port


def origin_allowed(origin: str, host_header: str) -> bool:
    """Whether a browser page at `origin` may open a socket that reached us as `host_header`.

    Scheme, host and port all count, as browsers count them: an entry of CSRF_TRUSTED_ORIGINS
    matches exactly; otherwise the host must be one of ALLOWED_HOSTS, the scheme https (or http
    in DEBUG), and the port the scheme's default or the one the browser connected to (the
    handshake's Host). A `*` in ALLOWED_HOSTS is ignored here: it must never let every site's
    pages ride a player's cookie.
    """
    parsed = _origin(origin)
    if parsed is None or parsed[0] not in DEFAULT_PORTS:
        return False
    if parsed in {_origin(trusted) for trusted in settings.CSRF_TRUSTED_ORIGINS}:
        return True
    scheme, host, port = parsed
    schemes = ("http", "https") if settings.DEBUG else ("https",)
    hosts = [pattern for pattern in settings.ALLOWED_HOSTS if pattern != "*"]
    if scheme not in schemes or not validate_host(host, hosts):
        return False
    return port == DEFAULT_PORTS[scheme] or split_domain_port(host_header) == (host, str(port))


class BrowserOriginValidator:
    """Checks the Origin of browser handshakes (origin_allowed).

    Browsers always send Origin on WebSocket handshakes, and a foreign page could ride the
    player's session cookie, so a foreign origin is refused (an HTTP 403 before any WebSocket
    exists). AR clients and scripts send no Origin and authenticate with a bearer token, which
    another site cannot read; they pass.
    """

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        headers = dict(scope.get("headers", ()))
        origin = headers.get(b"origin")
        if origin is None or origin_allowed(
            origin.decode("latin1"), headers.get(b"host", b"").decode("latin1")
        ):
            return await self.application(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)


def bearer_token(scope) -> str | None:
    """The raw token of an `Authorization: Bearer <token>` header; None without that header."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _sep, token = value.decode("latin1").partition(" ")
            if scheme.lower() == "bearer":
                return token.strip()
            return ""
    return None


class BearerTokenAuthMiddleware(BaseMiddleware):
    """Sets scope["user"] from an `Authorization: Bearer` header (AR clients and scripts).

    Sits inside AuthMiddlewareStack, so it overrides the session user: a handshake that presents
    a token is judged by that token alone, and a wrong or revoked token means "not
    authenticated" even when a session cookie rides along.
    """

    async def __call__(self, scope, receive, send):
        raw = bearer_token(scope)
        if raw is not None:
            scope = dict(scope)
            scope["user"] = await _user_for_token(raw) or AnonymousUser()
            scope["auth_method"] = "bearer"
        return await super().__call__(scope, receive, send)


def _authenticate(raw: str):
    from hunt.models import ApiToken

    return ApiToken.authenticate(raw)


# Not thread-sensitive: handshakes need not queue behind each other in one shared thread.
_user_for_token = database_sync_to_async(_authenticate, thread_sensitive=False)


class ClientAddressMiddleware:
    """Puts the client's address (lostwallet.addresses.client_address) in scope["client"] of
    HTTP and WebSocket connections, so Django's REMOTE_ADDR and the consumers see the player and
    not the reverse proxy. The client's own port is unknown behind a proxy: it becomes 0.
    """

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        peer = scope.get("client")
        if scope["type"] in ("http", "websocket") and peer:
            # Repeated headers are one list, in order (RFC 9110 §5.3).
            forwarded = b",".join(
                value for name, value in scope.get("headers", ()) if name == b"x-forwarded-for"
            )
            address = client_address(peer[0], forwarded.decode("latin1"))
            if address != peer[0]:
                scope = {**scope, "client": (address, 0)}
        return await self.application(scope, receive, send)
