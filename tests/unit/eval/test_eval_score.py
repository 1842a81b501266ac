"""scores.json: joining by question id, both metric families, breakdowns with CIs, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medvlm.data.records import SampleMeta, vqa_sample
from medvlm.errors import DataError
from medvlm.eval.answers import answers_from_rows
from medvlm.eval.score import items_path, read_answers, score, score_answers

# the METHODS.md 10-item aggregate, as a data set: (qid, type, organ, reference, prediction)
TEN = [
    (1, "CLOSED", "CHEST", "yes", "Yes."), (2, "CLOSED", "CHEST", "no", "Not sure"),
    (3, "CLOSED", "HEAD", "yes", "No"), (4, "CLOSED", "HEAD", "no", "Yes, there is a mass"),
    (5, "CLOSED", "ABD", "left", "left side"), (6, "CLOSED", "ABD", "yes", "I cannot tell"),
    (7, "OPEN", "CHEST", "left lung", "The left lung"), (8, "OPEN", "CHEST", "left lung", "Right lung"),
    (9, "OPEN", "HEAD", "ct with contrast", "CT"), (10, "OPEN", "ABD", "urinary", "kidney"),
]


def samples_of(rows=TEN):
    return [
        vqa_sample(
            id=f"s{qid}",
            question=f"question {qid}?",
            answer=answer,
            meta=SampleMeta(dataset="t", split="test", answer_type=kind, organ=organ, source_id=str(qid)),
        )
        for qid, kind, organ, answer, _ in rows
    ]


def answers_of(rows=TEN):
    return answers_from_rows([{"question_id": qid, "prompt": f"question {qid}?", "text": text}
                              for qid, _, _, _, text in rows])


def test_scores_follow_the_design_schema_and_reproduce_the_aggregate() -> None:
    result = score_answers(samples_of(), answers_of(), bootstrap=200, seed=0)
    scores = result.scores
    assert {"n", "metrics", "breakdown", "provenance"} <= set(scores)
    assert scores["n"] == 10
    parity = scores["metrics"]["llava_med"]
    assert list(parity) == [
        "open_recall",
        "closed_accuracy",
        "open_precision",
        "open_f1",
        "open_exact",
        "bleu",
        "bleu_1",
        "bleu_2",
        "bleu_3",
    ]
    assert parity["open_recall"] == pytest.approx(45.833333, abs=1e-4)
    assert parity["closed_accuracy"] == pytest.approx(50.0, abs=1e-6)
    strict = scores["metrics"]["strict"]
    assert strict["closed_accuracy"] == pytest.approx(100 * 2 / 6)
    assert strict["open_exact_match"] == pytest.approx(25.0)
    assert strict["open_f1"] == pytest.approx(100 * (1 + 0.5 + 0.5 + 0) / 4)
    assert (strict["n_closed"], strict["n_open"]) == (6, 4)
    assert strict["closed_unanswered"] == pytest.approx(100 * 2 / 6)  # "Not sure", "I cannot tell"
    # breakdowns: {field: {value: {metric: {value, ci_low, ci_high, n}}}}
    organ = scores["breakdown"]["organ"]
    assert set(organ) == {"ABD", "CHEST", "HEAD"}
    chest = organ["CHEST"]
    assert (
        chest["llava_med.closed_accuracy"]["value"] == 100.0 and chest["llava_med.closed_accuracy"]["n"] == 2
    )
    assert (
        chest["llava_med.open_recall"]["value"] == pytest.approx(75.0)
        and chest["llava_med.open_recall"]["n"] == 2
    )
    overall = scores["breakdown"]["overall"]["all"]["llava_med.open_recall"]
    assert overall["ci_low"] <= overall["value"] <= overall["ci_high"] and overall["n"] == 4
    assert set(scores["breakdown"]) == {
        "overall",
        "answer_type",
        "organ",
        "language",
    }  # no modality / type given
    assert scores["provenance"]["bootstrap"] == {"samples": 200, "seed": 0, "level": 0.95}
    # the same seed gives the same intervals
    again = score_answers(samples_of(), answers_of(), bootstrap=200, seed=0).scores
    assert again["breakdown"] == scores["breakdown"]


def test_confusion_matrix_counts_unanswered_and_missing() -> None:
    rows = TEN[:6] + [(11, "CLOSED", "ABD", "no", "x")]
    answers = answers_of(rows[:-1] + [])  # qid 11 has no prediction
    scores = score_answers(samples_of(rows), answers, bootstrap=0).scores
    confusion = scores["closed_confusion"]
    assert confusion["predicted_labels"] == ["yes", "no", "unanswered", "missing"]
    # reference yes: Yes. → yes; No → no; I cannot tell → unanswered.  no: Not sure → unanswered;
    # "Yes, there is a mass" → yes; qid 11 missing.  ("left" is not a yes/no question)
    assert confusion["matrix"] == [[1, 1, 1, 0], [1, 0, 1, 1]]
    assert scores["missing_predictions"] == {"count": 1, "ids": [11]}
    item = json.loads(json.dumps(score_answers(samples_of(rows), answers, bootstrap=0).items[-1]))
    assert (
        item["prediction"] is None
        and item["llava_med"]["hit"] == 0.0
        and item["strict"]["reason"] == "missing"
    )


def test_missing_open_prediction_is_wrong_not_an_empty_match() -> None:
    rows = [
        (1, "OPEN", None, "the", "x")
    ]  # the reference normalises to "" — an empty prediction would "match"
    scores = score_answers(samples_of(rows), answers_from_rows([]), bootstrap=0).scores
    assert (
        scores["metrics"]["llava_med"]["open_recall"] == 0.0 and scores["metrics"]["strict"]["open_f1"] == 0.0
    )


def test_unknown_ids_raise_or_are_counted(tmp_path: Path) -> None:
    answers = answers_from_rows(
        [{"question_id": 1, "text": "yes"}, {"question_id": 99, "text": "no"}], "a.jsonl"
    )
    with pytest.raises(
        DataError, match=r"a\.jsonl: key 'question_id': 1 prediction\(s\) for question ids not in"
    ):
        score_answers(samples_of(TEN[:1]), answers)
    scores = score_answers(samples_of(TEN[:1]), answers, policy="skip", bootstrap=0).scores
    assert scores["input_problems"]["count"] == 1
    assert "record 99" in scores["input_problems"]["examples"][0]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_bad_answer_lines(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "answers.jsonl", [
        json.dumps({"question_id": 1, "text": "Yes."}),
        "{not json",
        json.dumps({"question_id": 2, "text": None}),
        json.dumps({"text": "orphan"}),
        json.dumps({"question_id": 1, "text": "No"}),
        "",
        json.dumps({"question_id": 3, "text": "No"}),
    ])
    with pytest.raises(DataError, match=r"answers\.jsonl: record line 2: not valid JSON"):
        read_answers(path)
    answers = read_answers(path, policy="skip")
    assert (
        sorted(answers.rows) == ["1", "3"] and answers.rows["1"]["text"] == "Yes."
    )  # first of the duplicates
    kinds = [p.message for p in answers.problems]
    assert len(kinds) == 4
    assert kinds[1] == "text is NoneType, not a string" and kinds[2] == "no question_id"
    assert kinds[3].startswith("duplicate prediction for question 1 (different text")
    scores = score_answers(samples_of(TEN[:3]), answers, policy="skip", bootstrap=0).scores
    assert scores["input_problems"]["count"] == 4 and scores["missing_predictions"] == {
        "count": 1,
        "ids": [2],
    }
    with pytest.raises(DataError, match="answer file not found"):
        read_answers(tmp_path / "none.jsonl")


def test_duplicate_reference_ids_are_an_error() -> None:
    with pytest.raises(DataError, match="two reference records share this question id"):
        score_answers(samples_of(TEN[:1] + TEN[:1]), answers_of(TEN[:1]))


def test_answer_types_are_inferred_and_counted() -> None:
    samples = [vqa_sample(id="a", question="q?", answer="Yes", meta=SampleMeta(dataset="t", split="test")),
               vqa_sample(id="b", question="q2?", answer="heart", meta=SampleMeta(dataset="t", split="test"))]
    answers = answers_from_rows(
        [{"question_id": "a", "text": "yes"}, {"question_id": "b", "text": "the heart"}]
    )
    scores = score_answers(samples, answers, bootstrap=0).scores
    assert scores["inferred_answer_types"] == 2
    assert (scores["metrics"]["strict"]["n_closed"], scores["metrics"]["strict"]["n_open"]) == (1, 1)


def test_baseline_comparison_in_scores() -> None:
    # system right on 1, 5 and 7 (strict closed: 1, 5); baseline says "yes" to everything closed
    baseline_rows = [(q, k, o, r, "yes" if k == "CLOSED" else "lung") for q, k, o, r, _ in TEN]
    scores = score_answers(
        samples_of(), answers_of(), bootstrap=300, seed=1, baseline=answers_of(baseline_rows)
    ).scores
    tests = scores["comparison"]["tests"]
    strict = tests["strict.closed_accuracy"]
    # baseline strict closed: yes on q1, q3, q6 right (3/6); system: q1, q5 (2/6)
    assert strict["test"] == "mcnemar_exact"
    assert (strict["system_only_correct"], strict["baseline_only_correct"]) == (1, 2)
    assert strict["p_value"] == pytest.approx(1.0) and strict["difference"] == pytest.approx(
        100 * (2 - 3) / 6
    )
    recall = tests["llava_med.open_recall"]
    assert recall["test"] == "paired_bootstrap" and recall["n"] == 4
    assert recall["difference"] == pytest.approx(45.833333 - 100 * (0.5 + 0.5 + 0 + 0) / 4, abs=1e-4)
    assert recall["ci_low"] <= recall["difference"] <= recall["ci_high"]
    assert scores["comparison"]["n_paired"] == 10


def test_items_file_is_written_beside_scores(tmp_path: Path) -> None:
    result = score_answers(samples_of(), answers_of(), bootstrap=0)
    out = tmp_path / "run" / "scores.json"
    items = result.write(out)
    assert items == items_path(out) == tmp_path / "run" / "scores.items.jsonl"
    rows = [json.loads(line) for line in items.read_text().splitlines()]
    assert [r["question_id"] for r in rows] == list(range(1, 11))
    assert rows[1]["llava_med"]["hit"] == 1.0 and rows[1]["strict"] == {"correct": 0.0, "label": None,
                                                                         "reason": "hedge"}
    assert json.loads(out.read_text())["items_file"] == "scores.items.jsonl"


def test_score_returns_the_scores_dict_for_callers_of_the_foundation_api(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "answers.jsonl", [json.dumps({"question_id": q, "text": t}) for q, *_, t in TEN]
    )
    scores = score(samples_of(), read_answers(path), bootstrap=50)
    assert json.loads(json.dumps(scores))["metrics"] == score_answers(samples_of(), read_answers(path),
                                                                      bootstrap=50).scores["metrics"]
    as_mapping = {str(q): {"question_id": q, "text": t} for q, *_, t in TEN}
    named = score(samples_of(), as_mapping, answers_file="mine.jsonl", bootstrap=0)
    assert named["metrics"]["llava_med"]["open_recall"] == pytest.approx(45.833333, abs=1e-4)
    assert named["provenance"]["predictions"]["file"] == "mine.jsonl"
