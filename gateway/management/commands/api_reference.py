"""`manage.py api_reference [--check]`: docs/api.md, the REST API reference, generated from the
OpenAPI schema drf-spectacular serves at /api/schema/ (so the reference cannot drift from the code;
tests/test_api_reference.py runs it with --check)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from drf_spectacular.generators import SchemaGenerator

METHODS = ("get", "post", "put", "patch", "delete")


def _first_line(text: str) -> str:
    return " ".join(text.strip().split("\n\n")[0].split())


def _ref(content: dict[str, Any] | None) -> str:
    """The schema a body or response holds, by name (`Alias`, `Alias[]`), from its JSON media type."""
    media: dict[str, Any] = content or {}
    chosen: dict[str, Any] = media.get("application/json") or next(iter(media.values()), {})
    schema: dict[str, Any] = chosen.get("schema") or {}
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if schema.get("type") == "array" and "$ref" in (schema.get("items") or {}):
        return schema["items"]["$ref"].rsplit("/", 1)[-1] + "[]"
    return schema.get("type", "") if schema else ""


def _io(op: dict[str, Any]) -> str:
    body = _ref((op.get("requestBody") or {}).get("content"))
    ok = next((code for code in op.get("responses") or {} if code.startswith("2")), "")
    out = _ref(((op.get("responses") or {}).get(ok) or {}).get("content")) if ok else ""
    answer = f"{ok} {out}".strip() if ok else ""
    return f"{body} → {answer}" if body else answer


def _params(op: dict[str, Any]) -> str:
    names = [f"`{p['name']}`" for p in op.get("parameters") or () if p.get("in") == "query"]
    return ", ".join(names)


def render(schema: dict[str, Any]) -> str:
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, item in schema["paths"].items():
        for method in METHODS:
            if method in item:
                op = item[method]
                by_tag.setdefault((op.get("tags") or ["other"])[0], []).append((method.upper(), path, op))
    lines = [
        "# REST API reference",
        "",
        f"Generated from the OpenAPI schema ({schema['info'].get('title', '')} "
        f"{schema['info'].get('version', '')}) by `manage.py api_reference`; do not edit by hand. The live",
        "schema is at `/api/schema/` and browsable at `/api/docs/`. Every endpoint takes a session or",
        "`Authorization: Bearer ot-...` and acts on the caller's project (a key's own; `?project=<slug>`",
        "for a session). `/v1` (the OpenAI-compatible gateway) is described in docs/gateway.md. Body and",
        "answer name the schema's components (their fields are in the live schema).",
    ]
    for tag in sorted(by_tag):
        lines += [
            "",
            f"## {tag}",
            "",
            "| method | path | body → answer | what it does | query parameters |",
            "|---|---|---|---|---|",
        ]
        for method, path, op in by_tag[tag]:
            what = _first_line(op.get("summary") or op.get("description") or "").replace("|", "/")
            lines.append(f"| {method} | `{path}` | {_io(op)} | {what} | {_params(op)} |")
    return "\n".join(lines) + "\n"


class Command(BaseCommand):
    help = "Write docs/api.md from the OpenAPI schema (--check: fail if it is out of date)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--check", action="store_true")

    def handle(self, *args: Any, check: bool = False, **options: Any) -> None:
        schema = SchemaGenerator().get_schema(request=None, public=True)
        text = render(schema)
        path = Path(settings.BASE_DIR) / "docs" / "api.md"
        if check:
            if not path.is_file() or path.read_text() != text:
                raise CommandError("docs/api.md is out of date: run `manage.py api_reference`.")
            return
        path.write_text(text)
        self.stdout.write(f"wrote {path}")
