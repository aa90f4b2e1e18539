"""A clustering run's parameters and trace filters, checked when the run is created and read
again by the pipeline and the cluster edits."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.http import QueryDict

from traces.filters import FilterError, TraceFilters, parse_filters

from . import cluster_store, clustering, embedder, naming, prompts

REDUCTIONS = ("umap", "pca", "none")
PARAM_NAMES = (
    "reduction", "min_cluster_size", "prompt_fields", "namer", "max_traces", "embedding_model", "grouping_model",
)  # fmt: skip
FILTER_NAMES = (
    "range", "since", "until", "model", "provider", "alias", "status", "api_key",
    "metadata", "metadata_key", "metadata_value", "tag", "min_cost", "min_latency_ms", "q",
)  # fmt: skip


def run_embedding_model(params: dict[str, Any] | None) -> str:
    """The model of a run's space (its centroids and placements), recorded when it is created: the
    packaged MiniLM, except for runs of Nov 30 2026 made wholly with OPENTRACY_CLUSTER_EMBEDDING_MODEL_DIR's."""
    return (params or {}).get("embedding_model") or embedder.DEFAULT_MODEL


def params_clean(params: dict[str, Any] | None) -> dict[str, Any]:
    """The run's parameters with defaults filled in; ValidationError naming each bad one. A run's
    vectors, centroids and cache rows belong to one embedding model, so a run made with another
    model than MiniLM is refused (from before a configured model only grouped a sample)."""
    params = dict(params or {})
    errors: dict[str, str] = {}
    unknown = sorted(set(params) - set(PARAM_NAMES))
    if unknown:
        errors["params"] = f"Unknown parameter(s) {', '.join(unknown)}; use {', '.join(PARAM_NAMES)}."
    out: dict[str, Any] = {
        "reduction": params.get("reduction") or "umap",
        "min_cluster_size": params.get("min_cluster_size"),
        "prompt_fields": params.get("prompt_fields") or prompts.DEFAULT_PROMPT_FIELDS,
        "namer": params.get("namer", naming.DEFAULT_NAMER),
        "max_traces": params.get("max_traces") or cluster_store.MAX_TRACES,
        "embedding_model": run_embedding_model(params),
        "grouping_model": params.get("grouping_model") or "",
    }
    if out["embedding_model"] != embedder.DEFAULT_MODEL:
        errors["embedding_model"] = (
            f"This engine embeds prompts with {embedder.DEFAULT_MODEL}, not {out['embedding_model']}: start a new run."
        )
    if not isinstance(out["grouping_model"], str):
        errors["grouping_model"] = "Must be a model name."
    if out["reduction"] not in REDUCTIONS:
        errors["reduction"] = f"Use one of {', '.join(REDUCTIONS)}."
    if out["prompt_fields"] not in prompts.PROMPT_FIELDS:
        errors["prompt_fields"] = f"Use one of {', '.join(prompts.PROMPT_FIELDS)}."
    for name, low, high in (("min_cluster_size", 2, 10_000), ("max_traces", clustering.MIN_POINTS, 100_000)):
        value = out[name]
        if value in (None, "") and name == "min_cluster_size":
            out[name] = None
            continue
        try:
            number = int(value)
            if isinstance(value, bool) or number != float(value) or not low <= number <= high:
                raise ValueError
            out[name] = number
        except (TypeError, ValueError):
            errors[name] = f"Must be an integer from {low} to {high:,}."
    namer = out["namer"]
    if not isinstance(namer, str) or len(namer) > 200:
        errors["namer"] = "Must be an alias name (at most 200 characters), or empty for keyword names."
    else:
        out["namer"] = namer.strip()
    if errors:
        raise ValidationError(errors)
    return out


def with_grouping(cparams: clustering.ClusterParams, grouping_model: str) -> clustering.ClusterParams:
    """A grouping model embeds at most OPENTRACY_CLUSTER_EMBEDDING_MODEL_SAMPLE of a run's prompts,
    so UMAP and HDBSCAN fit on at most that many."""
    if not grouping_model:
        return cparams
    return replace(cparams, max_fit=min(cparams.max_fit, settings.OPENTRACY_CLUSTER_EMBEDDING_MODEL_SAMPLE))


def filters_clean(filters: dict[str, Any] | None) -> dict[str, str]:
    """The trace filters as strings (the traces API's query parameters); ValidationError when one
    is unknown or bad. No time bound means all time (capped at the newest max_traces traces)."""
    raw = {k: v for k, v in (filters or {}).items() if v not in (None, "")}
    unknown = sorted(set(raw) - set(FILTER_NAMES))
    if unknown:
        raise ValidationError({"filters": f"Unknown filter(s) {', '.join(unknown)}; use {', '.join(FILTER_NAMES)}."})
    clean = {k: str(v) for k, v in raw.items()}
    filters_parse(clean)
    return clean


def filters_parse(filters: dict[str, str]) -> TraceFilters:
    query = QueryDict(mutable=True)
    for key, value in filters.items():
        query[key] = value
    try:
        return parse_filters(query, all_time=True)
    except FilterError as exc:
        raise ValidationError(exc.errors) from exc
