"""The live tail's on/off switch (an htmx fragment of the traces page); the rows themselves come
over the websocket (traces/consumers.py)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from gateway import selectors


@login_required
@require_GET
def live_toggle(request: HttpRequest, slug: str) -> HttpResponse:
    membership = selectors.membership_for(user=request.user, slug=slug)
    if membership is None:
        raise Http404("No such project.")
    # The traces page's filters ride along, so the socket sends only the rows they select.
    query = request.GET.copy()
    query.pop("on", None)
    context = {"project": membership.project, "live_on": request.GET.get("on") == "1", "live_query": query.urlencode()}
    return render(request, "traces/_live_toggle.html", context)
