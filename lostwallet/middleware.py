"""ASGI middleware shared by the WebSocket routes."""

from __future__ import annotations

from channels.security.websocket import AllowedHostsOriginValidator


class BrowserOriginValidator(AllowedHostsOriginValidator):
    """Checks the Origin of browser handshakes against ALLOWED_HOSTS.

    Browsers always send Origin on WebSocket handshakes, and a foreign page could ride the
    player's session cookie, so a foreign origin is refused. AR clients and scripts send no
    Origin and authenticate with a bearer token, which another site cannot read; they pass.
    """

    async def __call__(self, scope, receive, send):
        headers = dict(scope.get("headers", ()))
        if b"origin" not in headers:
            return await self.application(scope, receive, send)
        return await super().__call__(scope, receive, send)
