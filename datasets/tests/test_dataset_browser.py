"""The curation page in headless Chromium: keyboard shortcuts drive keep, drop and an inline edit
through htmx against the live engine (its own module: Playwright's fixture is module-scoped)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from datasets import curation as C
from datasets.models import DatasetRow

pytestmark = pytest.mark.django_db(transaction=True)


def _wait(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_keyboard_curation(logged_in_page: Any, people: dict[str, Any]) -> None:
    lines = [{"prompt": f"question {i}", "response": f"answer {i}"} for i in range(3)]
    data = "\n".join(json.dumps(line) for line in lines).encode()
    dataset = C.dataset_import_jsonl(project=people["project"], name="Keys", file=data, user=people["owner"])
    first, second, third = C.open_version(dataset=dataset).rows.order_by("id")
    page = logged_in_page
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"/projects/acme/datasets/{dataset.pk}")
    page.wait_for_selector(".ds-row")
    page.keyboard.press("j")
    page.wait_for_selector(f"#row-{first.pk}.current")
    page.keyboard.press("k")  # keep the first; the next row becomes current
    page.wait_for_selector(f"#row-{first.pk}.status-keep")
    page.wait_for_selector(f"#row-{second.pk}.current")
    page.keyboard.press("d")
    page.wait_for_selector(f"#row-{second.pk}.status-drop")
    page.wait_for_selector(f"#row-{third.pk}.current")
    counter = [page.locator(f"#count-{s}").inner_text() for s in ("keep", "drop", "pending")]
    assert counter == ["1", "1", "1"]  # updated out of band with each row
    page.keyboard.press("e")
    editor = page.locator(f"#edit-{third.pk}")
    editor.wait_for()
    editor.fill("a corrected answer")
    editor.press("Control+Enter")
    page.wait_for_selector(f"#row-{third.pk} .ds-answer.edited")
    _wait(lambda: DatasetRow.objects.get(pk=third.pk).edited_response == "a corrected answer")
    statuses = dict(DatasetRow.objects.filter(version=first.version).values_list("pk", "status"))
    assert statuses == {first.pk: "keep", second.pk: "drop", third.pk: "pending"}
    assert errors == []
