"""Forms of the project settings page: parse and check input; the writes are gateway.services'
(and traces.services.retention_set), whose ValidationErrors are shown on the form too."""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from traces.ch_sql import MAX_RETENTION_DAYS

from .resolve import MAX_RETRIES

ALIAS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")


class ApiKeyCreateForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What uses it, e.g. backend-prod.")


class AliasForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="The model name clients send, e.g. smart.")
    target = forms.CharField(max_length=200, help_text="provider/model, e.g. openai/gpt-4o-mini.")
    fallbacks = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "spellcheck": "false"}),
        help_text="Tried in order when the target fails: provider/model, one per line or comma-separated.",
    )
    retries = forms.IntegerField(
        required=False,
        min_value=0,
        max_value=MAX_RETRIES,
        help_text="Retries per target on transient failures; empty keeps the alias's (or the engine default).",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # The key form beside it on the settings page also has `name`: distinct ids keep each
        # label pointing at its own input.
        kwargs.setdefault("auto_id", "id_alias_%s")
        super().__init__(*args, **kwargs)

    def clean_name(self) -> str:
        name = str(self.cleaned_data["name"]).strip()
        if not ALIAS_NAME.match(name):
            raise ValidationError("Use letters, digits and . _ : - (no spaces or slashes).")
        return name

    def clean_target(self) -> str:
        return str(self.cleaned_data["target"]).strip()

    def clean_fallbacks(self) -> list[str]:
        raw = str(self.cleaned_data.get("fallbacks") or "")
        return [part.strip() for part in re.split(r"[,\n]", raw) if part.strip()]


class AliasRollbackForm(forms.Form):
    name = forms.CharField(max_length=100)


class MemberAddForm(forms.Form):
    email = forms.EmailField(label="E-mail", help_text="An existing account; they join as a member.")


class RetentionForm(forms.Form):
    days = forms.IntegerField(
        min_value=1,
        max_value=MAX_RETENTION_DAYS,
        help_text=f"How long traces are kept: 1 to {MAX_RETENTION_DAYS} days. Applies to stored traces too.",
    )
