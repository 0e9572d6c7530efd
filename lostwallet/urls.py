from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path

from avatars.api import router as avatars_api
from avatars.api import studio_router
from hunt import views as hunt_views
from hunt.api import api
from hunt.api import not_found as api_not_found

admin.site.site_header = "Lost Wallet — organizers"
admin.site.site_title = "Lost Wallet admin"
admin.site.index_title = "Hunts, avatars and players"

# Here, where both apps meet: the game's API (hunt/api.py) may not import the chat app.
api.add_router("/avatars", avatars_api)
api.add_router("/creator", studio_router)

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", api.urls),
    re_path(r"^api/v1/(?P<rest>.*)$", api_not_found),
    path("accounts/login/", hunt_views.SignInView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("i18n/", include("django.conf.urls.i18n")),
    path("", include("console.urls")),
    path("", include("avatars.urls")),
    path("", include("hunt.urls")),
]
