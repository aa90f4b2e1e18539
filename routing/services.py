"""Writes to routing policies: create, update, delete. Every value is checked here (the API, the
page and the admin all come through), and a bad one raises ValidationError naming its field."""

from __future__ import annotations

import math
import re
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from datasets.models import ClusteringRun
from datasets.run_params import run_embedding_model
from distillation.models import Student
from distillation.serving import looks_like_student
from gateway.models import Alias, Project
from gateway.providers import PROVIDERS
from gateway.providers.local_embed import EMBED_MODEL
from gateway.resolve import parse_target

from .capabilities import CAPABILITIES
from .models import RoutingPolicy
from .router import BUILTIN_NAME

MAX_CANDIDATES = 20
SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
FIELDS = (
    "name",
    "is_default",
    "candidates",
    "lam",
    "clustering_run",
    "default_model",
    "max_latency_ms",
    "required_capabilities",
    "min_context_tokens",
    "temperature",
    "shrinkage",
    "expected_output_tokens",
)


class _Errors(dict[str, list[str]]):
    def add(self, field: str, message: str) -> None:
        self.setdefault(field, []).append(message)


def _number(value: Any, field: str, errors: _Errors, *, integer: bool = False) -> float | None:
    """A JSON number, or a form's numeric string."""
    if isinstance(value, bool) or value is None:
        errors.add(field, "A number is required.")
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        errors.add(field, f"{value!r} is not a number.")
        return None
    if not math.isfinite(number):
        errors.add(field, "A finite number is required.")
        return None
    if integer and number != int(number):
        errors.add(field, "A whole number is required.")
        return None
    return number


def _optional_int(value: Any, field: str, errors: _Errors, minimum: int) -> int | None:
    if value is None or value == "":
        return None
    number = _number(value, field, errors, integer=True)
    if number is None:
        return None
    if number < minimum:
        errors.add(field, f"Must be at least {minimum}.")
        return None
    return int(number)


def _boolean(value: Any, field: str, errors: _Errors) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("on", "true", "1", 1):
        return True
    if value in ("", "false", "0", 0, None):
        return False
    errors.add(field, "true or false.")
    return False


def _candidate(project: Project, name: str) -> str:
    """The candidate's canonical `provider/model` name; ValueError says why it is not callable."""
    target = parse_target(name)
    if target is None:
        raise ValueError(
            f"{name!r} is not a known model; use provider/model (providers: {', '.join(sorted(PROVIDERS))})."
        )
    if target.provider == "local":
        if target.model == EMBED_MODEL:
            raise ValueError(f"{name!r} is an embedding model, not a chat model.")
        known = target.model in PROVIDERS["local"].known_models
        if not known and not (
            looks_like_student(target.model) and Student.objects.filter(project=project, name=target.model).exists()
        ):
            raise ValueError(f"{name!r} is neither the local model nor a distilled student of this project.")
    return target.name


def _candidates(project: Project, value: Any, errors: _Errors) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        errors.add("candidates", 'A list of model names, e.g. ["openai/gpt-4o", "openai/gpt-4o-mini"].')
        return []
    out: list[str] = []
    for raw in value:
        name = raw.strip()
        if not name:
            continue
        try:
            canonical = _candidate(project, name)
        except ValueError as exc:
            errors.add("candidates", str(exc))
            continue
        if canonical in out:
            errors.add("candidates", f"{canonical!r} is listed twice.")
        else:
            out.append(canonical)
    if not 1 <= len(out) <= MAX_CANDIDATES and "candidates" not in errors:
        errors.add("candidates", f"Give from 1 to {MAX_CANDIDATES} candidates (got {len(out)}).")
    return out


def _capabilities(value: Any, errors: _Errors) -> list[str]:
    if value in (None, ""):
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        errors.add("required_capabilities", f"A list drawn from {', '.join(CAPABILITIES)}.")
        return []
    unknown = sorted(set(value) - set(CAPABILITIES))
    if unknown:
        errors.add("required_capabilities", f"Unknown: {', '.join(unknown)} (known: {', '.join(CAPABILITIES)}).")
    return [c for c in CAPABILITIES if c in value]


def _clustering_run(project: Project, value: Any, errors: _Errors) -> ClusteringRun | None:
    if value in (None, ""):
        return None
    if isinstance(value, ClusteringRun):
        run: ClusteringRun | None = value if value.project_id == project.pk else None
    else:
        pk = _number(value, "clustering_run", errors, integer=True)
        if pk is None:
            return None
        run = ClusteringRun.objects.filter(project=project, pk=int(pk)).first()
    if run is None:
        errors.add("clustering_run", "No such clustering run in this project.")
    elif run.status != ClusteringRun.Status.DONE:
        errors.add("clustering_run", f"Clustering run {run.pk} is {run.status}; only a finished run can be used.")
        return None
    elif (model := run_embedding_model(run.params)) != EMBED_MODEL:
        # The router embeds each request with MiniLM (routing/embedder.py): other centroids are another space.
        errors.add(
            "clustering_run",
            f"Clustering run {run.pk} embedded its prompts with {model}; routing needs clusters made with "
            f"{EMBED_MODEL}, the model the router embeds requests with.",
        )
        return None
    return run


def policy_check(*, policy: RoutingPolicy, data: dict[str, Any]) -> None:
    """Set the fields given in `data` on `policy` (unsaved), checking each and the whole; raises
    ValidationError with the messages per field."""
    errors = _Errors()
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        errors.add("non_field_errors", f"Unknown fields: {', '.join(unknown)}.")
    project = policy.project
    if "name" in data:
        name = data["name"].strip() if isinstance(data["name"], str) else ""
        if not name or len(name) > 100 or not SLUG.match(name):
            errors.add("name", "A slug: lower-case letters, digits, - and _, at most 100 characters.")
        elif name == BUILTIN_NAME:
            errors.add("name", f"`{BUILTIN_NAME}` names the built-in policy; choose another name.")
        elif RoutingPolicy.objects.filter(project=project, name=name).exclude(pk=policy.pk).exists():
            errors.add("name", f"This project already has a policy named {name!r}.")
        elif policy.pk and name != policy.name and (users := routed_aliases(policy)):
            errors.add("name", f"Aliases {users} route through `router/{policy.name}`: re-point them first.")
        policy.name = name
    if "candidates" in data:
        policy.candidates = _candidates(project, data["candidates"], errors)
    if "is_default" in data:
        policy.is_default = _boolean(data["is_default"], "is_default", errors)
    if "lam" in data:
        lam = _number(data["lam"], "lam", errors)
        if lam is not None and lam < 0:
            errors.add("lam", "λ must be 0 or more (0: best quality; larger: cheaper).")
        elif lam is not None:
            policy.lam = lam
    if "temperature" in data:
        temperature = _number(data["temperature"], "temperature", errors)
        if temperature is not None and temperature <= 0:
            errors.add("temperature", "Must be greater than 0.")
        elif temperature is not None:
            policy.temperature = temperature
    if "shrinkage" in data:
        shrinkage = _number(data["shrinkage"], "shrinkage", errors)
        if shrinkage is not None and shrinkage < 0:
            errors.add("shrinkage", "Must be 0 or more.")
        elif shrinkage is not None:
            policy.shrinkage = shrinkage
    if "expected_output_tokens" in data:
        tokens = _optional_int(data["expected_output_tokens"], "expected_output_tokens", errors, 1)
        if tokens is not None:
            policy.expected_output_tokens = tokens
        elif data["expected_output_tokens"] in (None, ""):
            errors.add("expected_output_tokens", "A whole number of at least 1.")
    for field in ("max_latency_ms", "min_context_tokens"):
        if field in data:
            setattr(policy, field, _optional_int(data[field], field, errors, 1))
    if "required_capabilities" in data:
        policy.required_capabilities = _capabilities(data["required_capabilities"], errors)
    if "clustering_run" in data:
        policy.clustering_run = _clustering_run(project, data["clustering_run"], errors)
    if "default_model" in data:
        value = data["default_model"]
        if value is not None and not isinstance(value, str):
            errors.add("default_model", "A model name, or empty.")
        else:
            default = (value or "").strip()
            try:
                policy.default_model = _candidate(project, default) if default else ""
            except ValueError as exc:
                errors.add("default_model", str(exc))
    if not errors and policy.default_model and policy.default_model not in policy.candidates:
        errors.add("default_model", f"{policy.default_model!r} is not one of the candidates.")
    if not errors and not policy.candidates:
        errors.add("candidates", f"Give from 1 to {MAX_CANDIDATES} candidates.")
    if errors:
        raise ValidationError(dict(errors))


def policy_save(*, policy: RoutingPolicy) -> RoutingPolicy:
    """Save a checked policy; setting it as the default clears the flag on the project's others."""
    with transaction.atomic():
        if policy.is_default:
            # One default per project: `model="auto"` must mean one policy.
            others = RoutingPolicy.objects.select_for_update().filter(project=policy.project, is_default=True)
            for other in others.exclude(pk=policy.pk):
                other.is_default = False
                other.save(update_fields=["is_default", "updated_at"])  # signals invalidate the gateway's cache
        try:
            with transaction.atomic():
                policy.save()
        except IntegrityError as exc:  # two concurrent creates of one name
            raise ValidationError({"name": [f"This project already has a policy named {policy.name!r}."]}) from exc
    return policy


def policy_create(*, project: Project, user: Any, data: dict[str, Any]) -> RoutingPolicy:
    """A new policy from `data` (the model's field names; `name` and `candidates` required)."""
    missing = [f for f in ("name", "candidates") if f not in data]
    if missing:
        raise ValidationError({f: ["This field is required."] for f in missing})
    policy = RoutingPolicy(project=project, created_by=user if getattr(user, "pk", None) else None)
    policy_check(policy=policy, data=data)
    return policy_save(policy=policy)


def policy_update(*, policy: RoutingPolicy, data: dict[str, Any]) -> RoutingPolicy:
    """Change the fields given in `data`; the others keep their values."""
    policy = RoutingPolicy.objects.select_related("project").get(pk=policy.pk)
    policy_check(policy=policy, data=data)
    return policy_save(policy=policy)


def routed_aliases(policy: RoutingPolicy) -> str:
    """The aliases whose target is this policy, as a list for a message ('' when none)."""
    aliases = Alias.objects.filter(project_id=policy.project_id, target=f"router/{policy.name}")
    names = aliases.values_list("name", flat=True)
    return ", ".join(f"`{n}`" for n in sorted(names))


def policy_delete(*, policy: RoutingPolicy) -> None:
    """Its cells and profile runs go with it; `model="auto"` falls back to the built-in policy. A
    policy an alias routes through is kept: deleting it would break that alias's every request."""
    if users := routed_aliases(policy):
        raise ValidationError(f"Aliases {users} route through `router/{policy.name}`: re-point or delete them first.")
    policy.delete()
