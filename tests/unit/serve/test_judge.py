"""LLaVA-Med's judged conversation score: prompts verbatim, score parsing, hand-computed relative scores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from medvlm.cli import main
from medvlm.errors import DataError, OutputError
from medvlm.eval.judge import JUDGE_INSTRUCTION, JUDGE_SYSTEM, Review, aggregate, judge_answers, parse_scores
from medvlm.serve.server import ServerThread


@pytest.mark.parametrize(
    ("reply", "scores"),
    [
        ("8 6\nAssistant 1 is more detailed.", (8.0, 6.0)),
        ("  7.5 9\n", (7.5, 9.0)),
        ("10, 5\nThe second is vague.", (10.0, 5.0)),
        ("8\t4", (8.0, 4.0)),
        ("Assistant 1: 8, Assistant 2: 4\n", None),
        ("8 6 7\n", None),
        ("eight six", None),
        ("8\n6", None),
        ("nan 5", None),
        ("", None),
    ],
)
def test_two_numbers_on_the_first_line(reply: str, scores) -> None:
    assert parse_scores(reply) == scores


def test_aggregation_by_hand() -> None:
    reviews = [
        Review("0", "conversation", "Histology", (8, 6)),
        Review("1", "conversation", "CXR", (10, 5)),
        Review("2", "detailed_description", "MRI", (7, 7)),
        Review("3", "detailed_description", "CT", None),  # unparsable reply
        Review("4", "conversation", "Gross", (9, 3)),
        Review("5", "conversation", "CT", (0, 5)),  # a zero reference score: no ratio
    ]
    result = aggregate(reviews)
    overall = result["overall"]
    assert (overall["n"], overall["scored"], overall["unparsable"], overall["zero_reference"]) == (6, 5, 1, 1)
    assert overall["reference_score"] == pytest.approx(34 / 5)
    assert overall["answer_score"] == pytest.approx(26 / 5)
    assert overall["relative_score"] == pytest.approx(100 * (6 / 8 + 5 / 10 + 7 / 7 + 3 / 9) / 4)  # 64.583
    assert overall["relative_of_means"] == pytest.approx(100 * 5.2 / 6.8)  # 76.471
    conversation = result["types"]["conversation"]
    assert conversation["relative_score"] == pytest.approx(100 * (6 / 8 + 5 / 10 + 3 / 9) / 3)  # 52.778
    assert conversation["reference_score"] == pytest.approx(27 / 4)
    detailed = result["types"]["detailed_description"]
    assert (detailed["n"], detailed["scored"], detailed["relative_score"]) == (2, 1, pytest.approx(100.0))
    domains = result["domains"]
    assert list(domains) == ["CXR", "MRI", "Histology", "Gross", "CT"]
    assert domains["CXR"]["relative_score"] == pytest.approx(50.0)
    assert domains["MRI"]["relative_score"] == pytest.approx(100.0)
    assert domains["Histology"]["relative_score"] == pytest.approx(75.0)
    assert domains["Gross"]["relative_score"] == pytest.approx(100 / 3)
    # CT: one unparsable reply and one zero reference score leave no ratio to average
    assert (domains["CT"]["n"], domains["CT"]["scored"], domains["CT"]["relative_score"]) == (2, 1, None)
    assert domains["CT"]["relative_of_means"] is None
    assert result["unparsable"] == {"count": 1, "question_ids": ["3"]}


QA50 = [  # (type, domain flags) of six questions in the published file's format
    ("conversation", {"histology": True, "gross": True}),
    ("conversation", {"chest_xray": True}),
    ("detailed_description", {"mri": True}),
    ("detailed_description", {"ct_scan": True}),
    ("conversation", {"gross": True}),
    ("conversation", {"ct_scan": True}),
]
REPLIES = ["8 6\nFine.", "10, 5\nVague.", "7 7\nEqual.", "Assistant 1: 8, Assistant 2: 4", "9 3\nWrong.", "0 5\nOdd."]


def write_qa50(path: Path) -> None:
    flags = ("chest_xray", "mri", "ct_scan", "histology", "gross")
    rows = [{"question_id": i, "image": f"{i}_F1.jpg", "pair_id": f"{i}_F1", "text": f"Question {i}?\n<image>",
             "gpt4_answer": f"Reference {i}.", "fig_caption": f"Caption {i}.", "fig_label": f"Fig. {i}",
             "in_text_mention": [{"tokens": f"Mention {i} ( Fig. {i} ) .", "entities": []}] if i else None,
             "domain": {name: domain.get(name, False) for name in flags}, "type": kind}
            for i, (kind, domain) in enumerate(QA50)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


@pytest.fixture()
def judge_server():
    """A judge that replies by the evaluated answer it sees ("answer i") and records every request."""
    seen: list[dict] = []

    async def chat(request: Request):
        body = await request.json()
        seen.append(body)
        user = body["messages"][1]["content"]
        index = int(user.split("[Assistant 2]\nanswer ", 1)[1].split("\n", 1)[0])
        return JSONResponse({"choices": [{"message": {"role": "assistant", "content": REPLIES[index]}}]})

    async def models(request: Request):
        return JSONResponse({"object": "list", "data": [{"id": "judge-4", "object": "model"}]})

    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]), Route("/v1/models", models)])
    with ServerThread(app) as thread:
        yield thread, seen


def test_judge_end_to_end_with_a_fake_judge(tmp_path: Path, judge_server, capsys) -> None:
    thread, seen = judge_server
    write_qa50(tmp_path / "qa50.jsonl")
    (tmp_path / "answers.jsonl").write_text("".join(
        json.dumps({"question_id": i, "prompt": f"Question {i}?", "text": f"answer {i}", "model_id": "mine"}) + "\n"
        for i in range(6)))
    args = ["judge", "--questions", str(tmp_path / "qa50.jsonl"), "--answers", str(tmp_path / "answers.jsonl"),
            "--output", str(tmp_path / "out" / "judge.json"), "--endpoint", thread.url, "--judge-model", "judge-4"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "unparsable judge replies: 1 (question ids 3)" in printed
    result = json.loads((tmp_path / "out" / "judge.json").read_text())
    assert result["overall"]["relative_score"] == pytest.approx(100 * (6 / 8 + 5 / 10 + 7 / 7 + 3 / 9) / 4)
    assert result["types"]["conversation"]["relative_score"] == pytest.approx(100 * (6 / 8 + 5 / 10 + 3 / 9) / 3)
    assert result["domains"]["Histology"]["n"] == 1 and result["domains"]["Gross"]["n"] == 1  # first flag wins
    judge = result["provenance"]["judge"]
    assert judge["model"] == "judge-4" and judge["temperature"] == 0.0 and judge["system"] == JUDGE_SYSTEM
    assert judge["instruction"] == JUDGE_INSTRUCTION and result["provenance"]["answers_model"] == "mine"
    # the prompt, exactly as LLaVA-Med builds it (question 1: reference as Assistant 1, the answer as 2)
    first = next(body for body in seen if "answer 1\n" in body["messages"][1]["content"])
    assert first["temperature"] == 0.0 and first["model"] == "judge-4"
    assert first["messages"][0] == {"role": "system", "content": "'You are a helpful and precise assistant for "
                                    "checking the quality of the answer."}
    assert first["messages"][1]["content"] == (
        "[Context]\nFigure Caption:\nFig. 1: Caption 1.\n\n"
        "Figure Context:\n\t- [{'tokens': 'Mention 1 ( Fig. 1 ) .', 'entities': []}]\n\n"
        "[Question]\nQuestion 1?\n<image>\n\n"
        "[Assistant 1]\nReference 1.\n\n[End of Assistant 1]\n\n"
        "[Assistant 2]\nanswer 1\n\n[End of Assistant 2]\n\n"
        f"[System]\n{JUDGE_INSTRUCTION}\n\n")
    assert "Figure Context:\n\t- None\n\n" in next(b for b in seen if "answer 0\n" in b["messages"][1]["content"])[
        "messages"][1]["content"]
    reviews = [json.loads(line) for line in (tmp_path / "out" / "judge.reviews.jsonl").read_text().splitlines()]
    assert sorted(r["question_id"] for r in reviews) == list(range(6))
    # a rerun reuses every review; a changed answer is judged again
    requests = len(seen)
    assert main(args) == 0 and len(seen) == requests
    (tmp_path / "answers.jsonl").write_text((tmp_path / "answers.jsonl").read_text().replace(
        '"text": "answer 2"', '"text": "answer 4"'))
    assert main(args) == 0 and len(seen) == requests + 1
    capsys.readouterr()
    (tmp_path / "answers.jsonl").write_text('{"question_id": 0, "text": "answer 0"}\n')
    assert main(args) == 2
    assert "5 of 6 questions have no answer (first: question_id 1, 2, 3, 4, 5)" in capsys.readouterr().err


def test_missing_answers_are_an_error(tmp_path: Path) -> None:
    write_qa50(tmp_path / "qa50.jsonl")
    (tmp_path / "answers.jsonl").write_text("")
    with pytest.raises(DataError, match="6 of 6 questions have no answer"):
        judge_answers(tmp_path / "qa50.jsonl", tmp_path / "answers.jsonl", tmp_path / "j.json",
                      endpoint="http://127.0.0.1:9", judge_model="x")


def test_someones_files_are_neither_replaced_nor_cut(tmp_path: Path) -> None:
    """The reviews log was cut at its first line that was not a review: pointed at someone's file (an
    --output whose .reviews.jsonl twin existed) it emptied it; judge.json replaced any file."""
    write_qa50(tmp_path / "qa50.jsonl")
    (tmp_path / "answers.jsonl").write_text("".join(
        json.dumps({"question_id": i, "text": f"answer {i}"}) + "\n" for i in range(6)))
    judge = {"endpoint": "http://127.0.0.1:9", "judge_model": "x"}  # refused before any request
    mine = tmp_path / "summary.json"
    mine.write_text("{}")
    with pytest.raises(OutputError, match=f"{mine}: exists and is not a file medvlm wrote"):
        judge_answers(tmp_path / "qa50.jsonl", tmp_path / "answers.jsonl", mine, **judge)
    log = tmp_path / "notes.reviews.jsonl"
    log.write_text("line one\nline two\n")
    with pytest.raises(DataError, match=f"{log}: line 1 is not a judge review row"):
        judge_answers(tmp_path / "qa50.jsonl", tmp_path / "answers.jsonl", tmp_path / "notes.json", **judge)
    assert mine.read_text() == "{}" and log.read_text() == "line one\nline two\n"
    with pytest.raises(OutputError, match="is also this command's input"):
        judge_answers(tmp_path / "qa50.jsonl", tmp_path / "answers.jsonl", tmp_path / "answers.jsonl", **judge)
