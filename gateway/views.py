from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from .selectors import projects_for_user


@login_required
def home(request: HttpRequest) -> HttpResponse:
    projects = projects_for_user(request.user)
    base_url = request.build_absolute_uri("/v1")
    return render(request, "gateway/home.html", {"projects": projects, "base_url": base_url})
