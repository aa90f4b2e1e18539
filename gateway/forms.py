"""Forms for provider credentials, shared by the dashboard and the admin.

The API key is write-only: never rendered, required on add (except for self-hosted providers that
need none), and left empty on edit to keep the stored one. Secret-looking options (a session
token, a secret access key) are shown masked and the mask keeps the stored value.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from django import forms
from django.core.exceptions import ValidationError

from .crypto import is_secret_option
from .models import Project, ProviderCredential

# Providers that work without a key: self-hosted servers, any custom server, the in-process model.
KEYLESS = ("ollama", "vllm", "custom", "local")
NEEDS_BASE_URL = ("azure", "custom")
MASK = "********"


def masked_options(options: dict[str, Any] | None) -> dict[str, Any]:
    return {k: MASK if is_secret_option(k) and v else v for k, v in (options or {}).items()}


class OptionsField(forms.JSONField):
    """JSON text; no options shows as an empty box rather than `{}`."""

    def prepare_value(self, value: Any) -> Any:
        return "" if value is None or value == {} else super().prepare_value(value)


class CredentialFormBase(forms.ModelForm[ProviderCredential]):
    field_order = ["project", "provider", "label", "api_key", "base_url", "weight", "options"]
    api_key = forms.CharField(
        label="API key",
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Stored encrypted, never shown again. Leave empty to keep the current key.",
    )
    _bedrock_hint = " For Bedrock: the secret access key (its id goes in the options)."
    options = OptionsField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}),
        help_text='A JSON object of strings, e.g. {"api_version": "2024-10-21"} (Azure) or '
        '{"region": "us-east-1", "access_key_id": "AKIA..."} (Bedrock). Secret values show as ' + MASK + ".",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["label"].required = False
        self.fields["weight"].required = False
        self.fields["base_url"].label = "Base URL"
        if self.instance.pk is None:
            self.fields["api_key"].help_text = "Stored encrypted, never shown again."
        self.fields["api_key"].help_text += self._bedrock_hint
        self.initial["options"] = masked_options(self.instance.options if self.instance.pk else {})

    def clean_label(self) -> str:
        return str(self.cleaned_data.get("label") or "default")

    def clean_weight(self) -> int:
        weight = self.cleaned_data.get("weight")
        return 1 if weight is None else int(weight)

    def clean_base_url(self) -> str:
        value = str(self.cleaned_data.get("base_url") or "").strip().rstrip("/")
        if value and not urlsplit(value).hostname:
            raise ValidationError("Enter an http:// or https:// URL with a host.")
        return value

    def clean_options(self) -> dict[str, str]:
        value = self.cleaned_data.get("options")
        if value in (None, ""):
            return {}
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ValidationError('Options must be a JSON object of strings, e.g. {"api_version": "2024-10-21"}.')
        stored = self.instance.options if self.instance.pk else {}
        return {k: stored[k] if v == MASK and k in stored else v for k, v in value.items()}

    def _project(self) -> Project | None:
        project = self.cleaned_data.get("project")
        if project is None and self.instance.project_id is not None:
            project = self.instance.project
        return project if isinstance(project, Project) else None

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        provider, label = cleaned.get("provider"), cleaned.get("label")
        if self.instance.pk is None and not cleaned.get("api_key") and provider and provider not in KEYLESS:
            self.add_error("api_key", f"Enter the {provider} API key.")
        if provider in NEEDS_BASE_URL and not cleaned.get("base_url") and "base_url" not in self.errors:
            self.add_error("base_url", f"`{provider}` needs a base URL.")
        project = self._project()
        if project is not None and provider and label:
            taken = ProviderCredential.objects.filter(project=project, provider=provider, label=label)
            if self.instance.pk is not None:
                taken = taken.exclude(pk=self.instance.pk)
            if taken.exists():
                self.add_error("label", f"{project} already has the credential {provider}:{label}; edit it instead.")
        return cleaned

    def validate_unique(self) -> None:
        """The one unique constraint is checked in clean(), with the project the form may not carry."""


class ProviderCredentialForm(CredentialFormBase):
    """The dashboard's form; the project comes from the URL."""

    class Meta:
        model = ProviderCredential
        fields = ["provider", "label", "base_url", "weight", "options"]

    def __init__(self, *args: Any, project: Project, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.instance.project = project
        self.fields["base_url"].widget.attrs["placeholder"] = "provider default"


class CredentialAdminForm(CredentialFormBase):
    class Meta:
        model = ProviderCredential
        fields = ["project", "provider", "label", "base_url", "weight", "options"]


def options_text(options: dict[str, Any] | None) -> str:
    """Options for display (secrets masked), compact JSON; empty for none."""
    return json.dumps(masked_options(options), ensure_ascii=False) if options else ""
