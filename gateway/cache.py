"""In-memory caches for the hot path: API keys, aliases and credentials, so a request makes no
database call once warm. A saved change drops the cache at once in this process and, through
Redis in the distributed mode, in every other (opentracy_site/invalidation.py; signals below);
entries also expire after OPENTRACY_CACHE_TTL_S in case a message is missed."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from opentracy_site import invalidation
from traces.ch_sql import DEFAULT_RETENTION_DAYS

from .crypto import decrypt, open_options
from .keys import hash_key
from .models import Alias, ApiKey, Project, ProviderCredential
from .providers.base import Credential

MAX_NEGATIVE = 10_000


@dataclass(frozen=True)
class Limits:
    """A key's and its project's limits (None: unlimited)."""

    key_rpm: int | None = None
    key_tpm: int | None = None
    project_rpm: int | None = None
    project_tpm: int | None = None
    budget_usd: float | None = None
    budget_period: str = "month"

    @property
    def any(self) -> bool:
        return any(
            v is not None for v in (self.key_rpm, self.key_tpm, self.project_rpm, self.project_tpm, self.budget_usd)
        )


NO_LIMITS = Limits()


@dataclass(frozen=True)
class KeyInfo:
    key_id: int
    project_id: int
    name: str
    limits: Limits = NO_LIMITS
    retention_days: int = DEFAULT_RETENTION_DAYS


@dataclass(frozen=True)
class Route:
    """An alias: its target, the fallback chain and the retry budget (None: the engine default)."""

    target: str
    fallbacks: tuple[str, ...] = ()
    retries: int | None = None
    canary_target: str = ""  # tried first on canary_percent of the requests
    canary_percent: int = 0


class TTLCache:
    def __init__(self) -> None:
        self._data: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any) -> tuple[bool, Any]:
        hit = self._data.get(key)
        if hit is None or hit[0] < time.monotonic():
            return False, None
        return True, hit[1]

    def put(self, key: Any, value: Any) -> None:
        if len(self._data) > MAX_NEGATIVE:
            self._data.clear()  # bounded: random bad keys cannot grow it without limit
        self._data[key] = (time.monotonic() + settings.OPENTRACY_CACHE_TTL_S, value)

    def clear(self) -> None:
        self._data.clear()

    async def get_or_load(self, key: Any, load: Callable[[Any], Any]) -> Any:
        """The cached value, else `load(key)` run in a thread (it queries the DB) and cached."""
        found, value = self.get(key)
        if not found:
            value = await sync_to_async(load)(key)
            self.put(key, value)
        return value


_keys = TTLCache()
_aliases = TTLCache()
_credentials = TTLCache()
_students = TTLCache()
_all_students = TTLCache()


def _load_key(key_hash: str) -> KeyInfo | None:
    key = ApiKey.objects.filter(key_hash=key_hash, revoked_at__isnull=True).select_related("project").first()
    if key is None:
        return None
    p = key.project
    limits = Limits(
        key.rpm_limit,
        key.tpm_limit,
        p.rpm_limit,
        p.tpm_limit,
        float(p.budget_usd) if p.budget_usd is not None else None,
        p.budget_period,
    )
    return KeyInfo(key.id, key.project_id, key.name, limits, p.retention_days)


async def key_info(raw_key: str) -> KeyInfo | None:
    info: KeyInfo | None = await _keys.get_or_load(hash_key(raw_key), _load_key)
    return info


def _load_aliases(project_id: int) -> dict[str, Route]:
    return {
        a.name: Route(a.target, tuple(a.fallbacks or ()), a.retries, a.canary_target, a.canary_percent)
        for a in Alias.objects.filter(project_id=project_id)
    }


async def aliases(project_id: int) -> dict[str, Route]:
    value: dict[str, Route] = await _aliases.get_or_load(project_id, _load_aliases)
    return value


def _load_credentials(project_id: int) -> dict[str, list[Credential]]:
    found: dict[str, list[Credential]] = {}
    for c in ProviderCredential.objects.filter(project_id=project_id).order_by("provider", "label"):
        options = open_options(c.options or {})
        cred = Credential(decrypt(c.api_key_encrypted), c.base_url.rstrip("/"), options, c.label, c.weight)
        found.setdefault(c.provider, []).append(cred)
    return found


async def credentials(project_id: int) -> dict[str, list[Credential]]:
    """The project's stored credentials per provider (several labels are load-balanced)."""
    value: dict[str, list[Credential]] = await _credentials.get_or_load(project_id, _load_credentials)
    return value


def _load_students(project_id: int) -> frozenset[str]:
    from distillation.models import Student

    return frozenset(Student.objects.filter(project_id=project_id).values_list("name", flat=True))


async def students(project_id: int) -> frozenset[str]:
    """The names of the project's approved students (`local/<name>`): no other project may call them."""
    value: frozenset[str] = await _students.get_or_load(project_id, _load_students)
    return value


def _load_all_students(_key: int) -> frozenset[str]:
    from distillation.models import Student

    return frozenset(Student.objects.values_list("name", flat=True))


async def all_students() -> frozenset[str]:
    """Every project's student names: a `vllm/<name>` that is one of them but not the caller's is
    another project's adapter on a shared vLLM server."""
    value: frozenset[str] = await _all_students.get_or_load(0, _load_all_students)
    return value


def students_changed() -> None:
    """Called by distillation when a student is approved or removed."""
    invalidation.changed("gateway.students")


def clear_all() -> None:
    for c in (_keys, _aliases, _credentials, _students, _all_students):
        c.clear()


def _clear_students() -> None:
    _students.clear()
    _all_students.clear()


for _name, _clear in (("keys", _keys.clear), ("aliases", _aliases.clear), ("credentials", _credentials.clear)):
    invalidation.register(f"gateway.{_name}", _clear)
invalidation.register("gateway.students", _clear_students)


@receiver([post_save, post_delete], sender=ApiKey)
@receiver([post_save, post_delete], sender=Project)  # limits live on the project too
def _api_key_changed(**kwargs: Any) -> None:
    invalidation.changed("gateway.keys")


@receiver([post_save, post_delete], sender=Alias)
def _alias_changed(**kwargs: Any) -> None:
    invalidation.changed("gateway.aliases")


@receiver([post_save, post_delete], sender=ProviderCredential)
def _credential_changed(**kwargs: Any) -> None:
    invalidation.changed("gateway.credentials")
