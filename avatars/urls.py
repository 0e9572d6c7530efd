from __future__ import annotations

from django.urls import path

from avatars import views

urlpatterns = [
    path("chat/<slug:avatar_slug>/", views.chat_page, name="chat"),
    path("avatars/<slug:avatar_slug>/portrait.png", views.portrait, name="avatar-portrait"),
    path("studio/", views.studio_home, name="studio"),
    path("studio/review/", views.review_queue, name="review-queue"),
    path("studio/review/<slug:slug>/", views.review_detail, name="review-detail"),
    path("studio/<slug:slug>/", views.studio_edit, name="studio-edit"),
    path("studio/<slug:slug>/submit/", views.studio_submit, name="studio-submit"),
    path("studio/<slug:slug>/revise/", views.studio_revise, name="studio-revise"),
    path("studio/<slug:slug>/card/<str:spec>.<str:fmt>", views.studio_card, name="studio-card"),
]
