from __future__ import annotations

from django.shortcuts import get_object_or_404, render

from hunt.models import Hunt


def home(request):
    hunts = Hunt.objects.all()
    return render(request, "hunt/home.html", {"hunts": hunts})


def hunt_detail(request, slug: str):
    hunt = get_object_or_404(Hunt, slug=slug)
    avatars = hunt.avatars.filter(published=True)
    words = hunt.words.all()
    return render(
        request, "hunt/hunt_detail.html", {"hunt": hunt, "avatars": avatars, "words": words}
    )
