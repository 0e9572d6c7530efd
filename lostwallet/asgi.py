"""ASGI entry point: HTTP through Django, WebSockets through Channels."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lostwallet.settings")
# Build the Django app first: it sets up the app registry the consumers' imports need.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from avatars.routing import websocket_urlpatterns as avatar_routes  # noqa: E402
from hunt.routing import websocket_urlpatterns as hunt_routes  # noqa: E402
from lostwallet.middleware import (  # noqa: E402
    BearerTokenAuthMiddleware,
    BrowserOriginValidator,
    ClientAddressMiddleware,
)

# The client's address first: Django (REMOTE_ADDR) and the consumers read it from the scope.
application = ClientAddressMiddleware(
    ProtocolTypeRouter(
        {
            "http": django_asgi_app,
            # Session cookie first (browsers), then a bearer token, when present, overrides it.
            "websocket": BrowserOriginValidator(
                AuthMiddlewareStack(
                    BearerTokenAuthMiddleware(URLRouter(avatar_routes + hunt_routes))
                )
            ),
        }
    )
)
