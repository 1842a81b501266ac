"""Report content without a model: galleries, headline layout, escaping, continual runs, inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from medvlm.data.records import SampleMeta, vqa_sample
from medvlm.errors import DataError, OutputError
from medvlm.eval.answers import answers_from_rows
from medvlm.eval.report import build_report, lenient_only, method_summary, worst_errors
from medvlm.eval.score import score_answers

ROWS = [  # qid, type, reference, prediction
    ("a", "CLOSED", "no", "Not sure"),  # lenient hit, strict wrong (hedge)
    ("b", "CLOSED", "yes", "No"),  # wrong on both counts
    ("c", "CLOSED", "yes", "Yes"),
    ("d", "OPEN", "left lung", "Right lung"),  # recall .5, F1 .5
    ("e", "OPEN", "brain", "the brain is <b>fine</b> <script>alert(1)</script>"),  # recall 1, exact 0
    ("f", "OPEN", "liver", None),  # missing
]


@pytest.fixture()
def scored(tmp_path: Path) -> Path:
    Image.new("RGB", (20, 10), (200, 30, 30)).save(tmp_path / "scan.png")
    samples = [
        vqa_sample(
            id=q,
            question=f"Question {q}?",
            answer=ref,
            image="scan.png",
            image_root=str(tmp_path),
            meta=SampleMeta(dataset="t", split="test", answer_type=kind, modality="CT", source_id=q),
        )
        for q, kind, ref, _ in ROWS
    ]
    answers = answers_from_rows(
        [{"question_id": q, "text": text} for q, _, _, text in ROWS if text is not None]
    )
    result = score_answers(
        samples, answers, bootstrap=100, provenance={"dataset": "toy-test", "model_label": "toy"}
    )
    result.write(tmp_path / "run" / "eval" / "scores.json")
    return tmp_path


def items_of(root: Path) -> list[dict]:
    return [
        json.loads(line) for line in (root / "run" / "eval" / "scores.items.jsonl").read_text().splitlines()
    ]


def test_worst_errors_order(scored: Path) -> None:
    worst = worst_errors(items_of(scored))
    # strict 0 and parity 0 first (b answered, then f missing), then strict 0 with parity credit (a, e),
    # then d (strict F1 .5); c is right and absent
    assert [row["question_id"] for row in worst] == ["b", "f", "a", "e", "d"]
    assert worst[1]["prediction"] is None and "path" not in worst[0]["question"]


def test_lenient_only(scored: Path) -> None:
    count, rows = lenient_only(items_of(scored))
    assert count == 2 and [row["question_id"] for row in rows] == ["a", "e"]


def test_report_from_a_run_directory(scored: Path) -> None:
    run = scored / "run"
    shutil.copy(run / "eval" / "scores.json", run / "scores.json")  # a copy, as the demo keeps one
    report = build_report([run], scored / "out" / "report.html")
    assert len(report["entries"]) == 1  # the copy is recognised
    assert report["headline"]["rows"][0]["model"] == "toy"
    cells = report["headline"]["rows"][0]["cells"]["toy-test"]
    assert cells["llava_med.closed_accuracy"]["value"] == pytest.approx(200 / 3) and cells["n"] == 6
    html = (scored / "out" / "report.html").read_text()
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert json.loads((scored / "out" / "report.json").read_text())["entries"][0]["missing_predictions"][
        "ids"
    ] == ["f"]
    assert html.count('alt="question ') == 5  # thumbnails of the scan for every gallery card


def test_continual_method_summary() -> None:
    runs = [
        {"method": "sac", "seed": s, "metrics": {"avg": v, "bwt": -v / 10}} for s, v in ((0, 60.0), (1, 70.0))
    ]
    runs.append({"method": "seq_ft", "seed": 0, "metrics": {"avg": 50.0, "bwt": None}})
    summary = {row["method"]: row for row in method_summary(runs)}
    assert summary["sac"]["mean"]["avg"] == 65.0 and summary["sac"]["sd"]["avg"] == pytest.approx(7.0710678)
    assert summary["sac"]["seeds"] == [0, 1]
    assert summary["seq_ft"]["sd"]["avg"] is None and summary["seq_ft"]["mean"]["bwt"] is None


def test_inputs_that_are_not_reports(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file or directory"):
        build_report([tmp_path / "missing"], tmp_path / "r.html")
    broken = tmp_path / "continual.json"
    broken.write_text('{"method": "x", ')
    with pytest.raises(DataError, match="continual.json: not valid JSON at line 1"):
        build_report([broken], tmp_path / "r.html")
    broken.write_text(json.dumps({"method": "x", "seed": 0, "tasks": ["a"], "probes": ["a", "general"],
                                  "accuracy": [[1, 2], [3]], "metrics": {}}))
    with pytest.raises(DataError, match="accuracy row 1 has 1 values for 2 probes"):
        build_report([broken], tmp_path / "r.html")


def test_thumbnails_only_from_inside_their_image_root(tmp_path: Path) -> None:
    from medvlm.eval.plots import thumbnail

    root = tmp_path / "images"
    root.mkdir()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(root / "a.png")
    Image.new("RGB", (8, 8), (10, 10, 200)).save(tmp_path / "outside.png")
    assert thumbnail({"root": str(root), "path": "a.png"}) is not None
    assert thumbnail({"root": str(root), "path": "../outside.png"}) is None
    assert thumbnail({"root": str(root), "path": str(tmp_path / "outside.png")}) is None
    assert thumbnail({"root": None, "path": str(tmp_path / "outside.png")}) is None


def test_a_report_never_replaces_the_scores_it_reads(scored: Path) -> None:
    """report --output onto its own input scores.json replaced it (probe Q02)."""
    scores = scored / "run" / "eval" / "scores.json"
    before = scores.read_bytes()
    with pytest.raises(OutputError, match="is also this command's input"):  # its report.json twin
        build_report([scored / "run"], scores.with_suffix(".html"))
    with pytest.raises(OutputError, match="give an .html path"):  # the HTML itself (HTML and JSON: one file)
        build_report([scored / "run"], scores)
    assert scores.read_bytes() == before
