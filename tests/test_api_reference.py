"""docs/api.md is the REST API reference generated from the OpenAPI schema: it must be current
(regenerate with `manage.py api_reference`) and cover every path the schema has."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from drf_spectacular.generators import SchemaGenerator

from gateway.management.commands.api_reference import render

DOC = Path(__file__).resolve().parent.parent / "docs" / "api.md"


def test_the_reference_is_current_and_complete() -> None:
    call_command("api_reference", check=True)
    schema = SchemaGenerator().get_schema(request=None, public=True)
    text = DOC.read_text()
    for path in schema["paths"]:
        assert f"`{path}`" in text, path
    assert "| POST | `/api/routing/policies` | PolicyBody → 201 RoutingPolicyDetail |" in text


def test_a_stale_reference_fails_the_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from django.conf import settings

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "api.md").write_text("# out of date\n")
    monkeypatch.setattr(settings, "BASE_DIR", tmp_path)
    with pytest.raises(CommandError, match="out of date"):
        call_command("api_reference", check=True)
    call_command("api_reference")
    assert (tmp_path / "docs" / "api.md").read_text() == render(SchemaGenerator().get_schema(request=None, public=True))
