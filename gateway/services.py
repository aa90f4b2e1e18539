"""Writes for projects, keys, credentials and aliases. Keyword-only, typed, one verb each."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from .connection import ConnectionResult as ConnectionResult
from .connection import credential_test as credential_test
from .crypto import encrypt, seal_options
from .keys import generate_key, hash_key
from .models import Alias, AliasChange, ApiKey, Membership, Project, ProviderCredential, validate_base_url
from .providers import PROVIDERS
from .resolve import MAX_RETRIES, ROUTER_PREFIX, parse_target


def project_create(*, slug: str, name: str = "", owner: User | None = None) -> Project:
    project = Project.objects.create(slug=slug, name=name or slug)
    if owner is not None:
        Membership.objects.create(project=project, user=owner, role=Membership.Role.OWNER)
    return project


def membership_add(*, project: Project, user: User, role: str = Membership.Role.MEMBER) -> Membership:
    membership, _ = Membership.objects.update_or_create(project=project, user=user, defaults={"role": role})
    return membership


def api_key_create(*, project: Project, name: str, created_by: User | None = None) -> tuple[ApiKey, str]:
    """Returns the row and the raw key; the raw key is not stored and cannot be shown again."""
    raw = generate_key()
    key = ApiKey.objects.create(
        project=project, name=name, prefix=raw[:10], key_hash=hash_key(raw), created_by=created_by
    )
    return key, raw


def api_key_revoke(*, api_key: ApiKey) -> ApiKey:
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
    return api_key


def credential_set(
    *,
    project: Project,
    provider: str,
    api_key: str,
    base_url: str = "",
    options: dict[str, str] | None = None,
    label: str = "default",
    weight: int = 1,
) -> ProviderCredential:
    if provider not in PROVIDERS:
        raise ValidationError(f"Unknown provider {provider!r}; known: {', '.join(sorted(PROVIDERS))}.")
    validate_base_url(base_url)
    same = ProviderCredential.objects.filter(project=project, provider=provider, label=label)
    stored = same.values_list("options", flat=True).first() or {}
    cred, _ = ProviderCredential.objects.update_or_create(
        project=project,
        provider=provider,
        label=label,
        defaults={
            "api_key_encrypted": encrypt(api_key),
            "base_url": base_url,
            "options": seal_options(options or {}, stored),
            "weight": weight,
        },
    )
    return cred


def credential_update(
    *,
    credential: ProviderCredential,
    provider: str,
    label: str,
    base_url: str,
    options: dict[str, str],
    weight: int,
    api_key: str = "",
) -> ProviderCredential:
    """Edit a stored credential in place (provider and label included); an empty `api_key` keeps
    the stored key."""
    if provider not in PROVIDERS:
        raise ValidationError(f"Unknown provider {provider!r}; known: {', '.join(sorted(PROVIDERS))}.")
    validate_base_url(base_url)
    credential.provider, credential.label, credential.base_url = provider, label, base_url
    credential.options, credential.weight = seal_options(options, credential.options or {}), weight
    fields = ["provider", "label", "base_url", "options", "weight", "updated_at"]
    if api_key:
        credential.api_key_encrypted = encrypt(api_key)
        fields.append("api_key_encrypted")
    credential.save(update_fields=fields)
    return credential


def credential_delete(*, credential: ProviderCredential) -> None:
    credential.delete()


def _validate_target(target: str, project: Project | None = None) -> None:
    """A model the engine can address; with `project`, also `router/<policy>` naming one of its
    routing policies (an alias's target, never a fallback: a policy orders its own candidates)."""
    if project is not None and target.startswith(ROUTER_PREFIX):
        from routing.models import RoutingPolicy

        name = target.removeprefix(ROUTER_PREFIX)
        if not RoutingPolicy.objects.filter(project=project, name=name).exists():
            raise ValidationError(f"Alias target {target!r} names no routing policy of this project.")
        return
    if target.startswith(ROUTER_PREFIX):
        raise ValidationError(f"Fallback {target!r}: a routing policy can only be an alias's target.")
    if parse_target(target) is None:
        raise ValidationError(
            f"Alias target {target!r} is not a known model; use provider/model or provider@label/model "
            f"(providers: {', '.join(sorted(PROVIDERS))}), or router/<policy> for a routing policy."
        )


@transaction.atomic
def alias_set(
    *,
    project: Project,
    name: str,
    target: str,
    changed_by: str,
    fallbacks: list[str] | None = None,
    retries: int | None = None,
) -> Alias:
    """Create or re-point an alias, recording target changes in its history. `fallbacks` and
    `retries` are replaced when given (None keeps the alias's current ones)."""
    _validate_target(target, project)
    for fallback in fallbacks or ():
        _validate_target(fallback)
    if retries is not None and not 0 <= retries <= MAX_RETRIES:
        raise ValidationError(f"retries must be from 0 to {MAX_RETRIES}.")
    alias = Alias.objects.select_for_update().filter(project=project, name=name).first()
    previous = alias.target if alias else ""
    if alias is None:
        alias = Alias.objects.create(
            project=project, name=name, target=target, fallbacks=fallbacks or [], retries=retries
        )
    else:
        alias.target = target
        if fallbacks is not None:
            alias.fallbacks = fallbacks
        if retries is not None:
            alias.retries = retries
        alias.save(update_fields=["target", "fallbacks", "retries", "updated_at"])
    if previous != target:
        AliasChange.objects.create(
            project=project, name=name, from_target=previous, to_target=target, changed_by=changed_by
        )
    return alias


def alias_for_canary(*, project: Project, name: str, lock: bool = False) -> Alias:
    """The alias a canary can share: it exists and names a model (a routing policy picks its own)."""
    rows = Alias.objects.filter(project=project, name=name)
    alias = (rows.select_for_update() if lock else rows).first()
    if alias is None:
        raise ValidationError(f"There is no alias {name!r} to put a canary on.")
    if alias.target.startswith(ROUTER_PREFIX):
        raise ValidationError(f"Alias {name!r} routes through {alias.target}: its policy picks the models.")
    return alias


@transaction.atomic
def alias_canary_set(*, project: Project, name: str, target: str, percent: int) -> Alias:
    """Send `percent` of the alias's requests to `target` first (its own target stays the fallback).
    Not a target change, so not in the alias history: whoever starts the canary records it."""
    if not 1 <= percent <= 100:
        raise ValidationError("A canary takes from 1 to 100 percent of the requests.")
    _validate_target(target)  # a model, never router/<policy>
    alias = alias_for_canary(project=project, name=name, lock=True)
    alias.canary_target, alias.canary_percent = target, percent
    alias.save(update_fields=["canary_target", "canary_percent", "updated_at"])
    return alias


@transaction.atomic
def alias_canary_clear(*, project: Project, name: str) -> None:
    for alias in Alias.objects.select_for_update().filter(project=project, name=name):
        alias.canary_target, alias.canary_percent = "", 0
        alias.save(update_fields=["canary_target", "canary_percent", "updated_at"])


@transaction.atomic
def alias_delete(*, project: Project, name: str, changed_by: str) -> bool:
    alias = Alias.objects.select_for_update().filter(project=project, name=name).first()
    if alias is None:
        return False
    AliasChange.objects.create(
        project=project, name=name, from_target=alias.target, to_target="", changed_by=changed_by
    )
    alias.delete()
    return True


@transaction.atomic
def alias_rollback(*, project: Project, name: str, changed_by: str) -> Alias | None:
    """Undo the alias's latest change. Returns the alias, or None when the undo removed it.
    Raises ValidationError when there is no history to roll back."""
    last = AliasChange.objects.filter(project=project, name=name).first()
    if last is None:
        raise ValidationError(f"Alias {name!r} has no history to roll back.")
    if not last.from_target:
        alias_delete(project=project, name=name, changed_by=changed_by)
        return None
    return alias_set(project=project, name=name, target=last.from_target, changed_by=changed_by)


@transaction.atomic
def membership_remove(*, membership: Membership) -> None:
    """Take a person out of a project. Raises ValidationError for its last owner (a project always
    keeps someone who can manage it)."""
    if membership.role == Membership.Role.OWNER:
        owners = Membership.objects.select_for_update().filter(project=membership.project, role=Membership.Role.OWNER)
        if owners.exclude(pk=membership.pk).count() == 0:
            raise ValidationError("A project keeps at least one owner: add another owner before removing this one.")
    membership.delete()
