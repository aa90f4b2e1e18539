"""The job's `exact` judge on rows curated from traffic (no reference): candidates are compared
with the row's curated answer, a person's edit first; a reference, when there is one, wins."""

from __future__ import annotations

from datasets.models import DatasetRow, JudgeRun
from distillation.jobs import score_text


def test_exact_without_a_reference_compares_with_the_curated_answer() -> None:
    run = JudgeRun(kind="exact", judge="exact", options={})
    traffic = DatasetRow(messages=[], response="card_arrival (chatty)", edited_response="card_arrival")
    assert score_text(run, traffic, "card_arrival").score == 1.0
    assert score_text(run, traffic, "card_arrival (chatty)").score == 0.0  # the edit is the target
    labelled = DatasetRow(messages=[], response="card_arrival", reference="pin_blocked")
    assert (
        score_text(run, labelled, "pin_blocked").score == 1.0 and score_text(run, labelled, "card_arrival").score == 0.0
    )
    # Other checks still see the reference as it is (none here).
    regex = JudgeRun(kind="regex", judge="regex", options={"pattern": "^card"})
    assert score_text(regex, traffic, "card_arrival").score == 1.0
