"""The engine's in-process calls to itself: aliases resolve, the trace is written and marked
internal, errors come back as InternalCallError, and a scope key cannot be forged over HTTP."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from gateway.internal import INTERNAL_METADATA_KEY, InternalCallError, chat_sync, reply_text
from gateway.services import alias_set
from tests.support import read_trace

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_internal_call_goes_through_the_alias_and_is_traced_as_internal(
    people: dict[str, Any], providers: dict[str, Any]
) -> None:
    project = people["project"]
    alias_set(project=project, name="namer", target="openai/scripted-namer", changed_by="test")
    providers["openai"].scripts["scripted-namer"] = ["Invoice questions"]
    data = chat_sync(
        project=project,
        body={"model": "namer", "messages": [{"role": "user", "content": "name this"}]},
        purpose="naming",
    )
    assert reply_text(data) == "Invoice questions"
    trace = read_trace(data["_trace_id"])
    assert trace["project_id"] == project.id and trace["alias"] == "namer"
    assert trace["metadata"][INTERNAL_METADATA_KEY] == "naming" and trace["api_key_id"] == 0


def test_an_engine_error_is_raised_with_its_message(people: dict[str, Any], providers: dict[str, Any]) -> None:
    with pytest.raises(InternalCallError) as err:
        chat_sync(project=people["project"], body={"model": "no-such-alias", "messages": []}, purpose="judge")
    assert err.value.status == 400


def test_the_internal_key_cannot_be_sent_over_http(server_url: str, people: dict[str, Any]) -> None:
    r = httpx.post(
        f"{server_url}/v1/chat/completions",
        headers={"opentracy.internal_key": "1"},
        json={"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code == 401
