"""The admin edits dataset rows through the curation services: revision and audit apply, a stale
form is refused naming who changed the row, a frozen version's rows cannot change."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from datasets import curation as C
from datasets.models import DatasetRow

pytestmark = pytest.mark.django_db(transaction=True)
INLINES = {f"{p}-{k}": "0" for p in ("verdicts", "edits") for k in ("TOTAL_FORMS", "INITIAL_FORMS")}


@pytest.fixture
def admin_client(people: dict[str, Any]) -> Client:
    admin = get_user_model().objects.create_superuser("root@example.com", "root@example.com", "pw-root-123")
    browser = Client()
    browser.force_login(admin)
    return browser


@pytest.fixture
def row(people: dict[str, Any]) -> DatasetRow:
    dataset = C.dataset_import_jsonl(project=people["project"], name="A", file=b'{"prompt": "q", "response": "a"}')
    found = C.open_version(dataset=dataset).rows.get()
    return found


def _post(client: Client, row: DatasetRow, **fields: Any) -> Any:
    data = {"status": row.status, "edited_response": row.edited_response, "reference": row.reference, **INLINES}
    return client.post(f"/admin/datasets/datasetrow/{row.pk}/change/", {**data, **fields})


def test_admin_edits_go_through_the_services(admin_client: Client, row: DatasetRow, people: dict[str, Any]) -> None:
    r = _post(admin_client, row, status="keep", edited_response="better", seen_revision="0")
    assert r.status_code == 302, r.content.decode()[:2000]
    row.refresh_from_db()
    assert (row.status, row.edited_response, row.response, row.revision) == ("keep", "better", "a", 2)
    assert set(row.edits.values_list("field", "user__username")) == {
        ("status", "root@example.com"),
        ("edited_response", "root@example.com"),
    }
    # Someone else edits on the curation page; the admin form opened at revision 2 is refused.
    C.row_edit_response(row=row, text="theirs", user=people["member"], revision=2)
    r = _post(admin_client, row, edited_response="mine", seen_revision="2")
    assert r.status_code == 200 and "changed by member@example.com" in r.content.decode()
    row.refresh_from_db()
    assert row.edited_response == "theirs"
    C.version_freeze(version=row.version)
    r = _post(admin_client, row, status="drop", seen_revision=str(row.revision))
    assert r.status_code == 200 and "Version 1 is frozen" in r.content.decode()
