"""Validation against OpenAI's published OpenAPI description (../shared/specs/), the contract
that /v1 promises. Its `nullable: true` (OpenAPI 3.0 style) becomes a `null` type first."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

URI = "urn:openai-openapi"
SPEC = Path(__file__).resolve().parents[2] / "shared" / "specs" / "openai-openapi.yaml"


def _nullable_to_null(node: Any) -> Any:
    if isinstance(node, dict):
        node = {k: _nullable_to_null(v) for k, v in node.items()}
        if node.pop("nullable", False):
            if "enum" in node and None not in node["enum"]:
                node["enum"] = [*node["enum"], None]
            if isinstance(node.get("type"), str):
                node["type"] = [node["type"], "null"]
            elif "type" not in node:
                node = {"anyOf": [node, {"type": "null"}]}
        return node
    if isinstance(node, list):
        return [_nullable_to_null(v) for v in node]
    return node


@functools.cache
def _spec() -> dict[str, Any]:
    with SPEC.open() as f:
        spec = _nullable_to_null(yaml.load(f, Loader=yaml.CSafeLoader))
    # Relative refs (#/components/...) inside the spec resolve against its own URI.
    spec["$id"] = URI
    return spec


@functools.cache
def validator(component: str) -> Draft202012Validator:
    spec = _spec()
    registry = Registry().with_resource(URI, Resource.from_contents(spec, default_specification=_draft()))
    schema = {"$ref": f"{URI}#/components/schemas/{component}"}
    return Draft202012Validator(schema, registry=registry)


def _draft() -> Any:
    from referencing.jsonschema import DRAFT202012

    return DRAFT202012


def assert_valid(component: str, instance: Any) -> None:
    errors = sorted(validator(component).iter_errors(instance), key=lambda e: list(e.path))
    assert not errors, f"{component}: " + "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5])
