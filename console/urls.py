from __future__ import annotations

from django.urls import path

from console import views

urlpatterns = [
    path("console/<slug:slug>/", views.console_page, name="console"),
    path("console/<slug:slug>/figures.json", views.console_figures_json, name="console-figures"),
    path("console/<slug:slug>/pause", views.pause, name="console-pause"),
    path("console/<slug:slug>/registration", views.registration, name="console-registration"),
    path("console/<slug:slug>/announce", views.announce, name="console-announce"),
    path("console/<slug:slug>/examples", views.add_example, name="console-add-example"),
    path(
        "console/<slug:slug>/counterexamples",
        views.add_counterexample,
        name="console-add-counterexample",
    ),
    path(
        "console/<slug:slug>/players/<int:player_id>/suspend",
        views.suspend,
        name="console-suspend",
    ),
    path("console/<slug:slug>/export/<str:what>", views.export, name="console-export"),
]
