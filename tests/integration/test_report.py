"""predict → score --baseline → report through the command line, and the report in a real browser.

report.html is always parsed: every plot and thumbnail must be an embedded base64 PNG that decodes,
and nothing may point at the network. Where headless Chromium (Debian chromium + chromium-driver) is
installed, the page is also loaded through WebDriver and every image must have decoded there, with
no resource fetched; without it that part skips.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import socket
import subprocess
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from medvlm.cli import main
from medvlm.eval.report import build_report

CONTINUAL = {"seed": 0, "tasks": ["modality", "organ"], "probes": ["modality", "organ", "general"],
             "accuracy": [[40.0, 35.0, 70.0], [90.0, 40.0, 62.0], [82.0, 88.0, 58.0]],
             "metrics": {"avg": 86.0, "last": 85.0, "bwt": -8.0, "fwt": 5.0, "forgetting": 8.0,
                         "general_retention": 0.829}, "provenance": {"recipe": "continual.yaml"}}


class Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict] = []
        self.links: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attributes = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.images.append(attributes)
        self.links += [value for key, value in attrs if key in ("src", "href", "action", "data") and value]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, micro_model, synthetic_dir: Path, synthetic_options: dict) -> Path:
    """A model directory, its answers and a baseline's, scored as a user would from the shell."""
    root = tmp_path_factory.mktemp("report")
    model, processor = micro_model
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    data = ["--dataset", "synthetic", "--path", str(synthetic_dir), "--split", "test",
            "--option", "subset=medical_vqa",
            "--option", f"general_images={json.dumps(synthetic_options['general_images'])}",
            "--option", f"medical_images={json.dumps(synthetic_options['medical_images'])}"]
    assert main(["predict", "--model", str(root / "model"), *data, "--output", str(root / "answers.jsonl"),
                 "--batch-size", "32", "--max-new-tokens", "6", "--prompt-style", "short_answer"]) == 0
    rows = [json.loads(line) for line in (root / "answers.jsonl").read_text().splitlines()]
    # the baseline answers "yes" to everything (and skips one question)
    (root / "baseline.jsonl").write_text(
        "".join(
            json.dumps({"question_id": r["question_id"], "prompt": r["prompt"], "text": "yes"}) + "\n"
            for r in rows[1:]
        )
    )
    assert main(["score", *data, "--predictions", str(root / "answers.jsonl"), "--output",
                 str(root / "system" / "scores.json"), "--baseline", str(root / "baseline.jsonl"),
                 "--bootstrap", "200"]) == 0
    assert main(["score", *data, "--predictions", str(root / "baseline.jsonl"), "--output",
                 str(root / "base" / "scores.json"), "--bootstrap", "200"]) == 0
    for method, bwt in (("sac", -8.0), ("seq_ft", -30.0)):
        run = {**CONTINUAL, "method": method, "metrics": {**CONTINUAL["metrics"], "bwt": bwt}}
        (root / method).mkdir()
        (root / method / "continual.json").write_text(json.dumps(run))
    assert (
        main(
            [
                "report",
                str(root / "system"),
                str(root / "sac"),
                str(root / "seq_ft"),
                "--output",
                str(root / "out" / "report.html"),
                "--baseline",
                str(root / "base"),
                "--title",
                "test report",
            ]
        )
        == 0
    )
    return root


def test_scores_from_the_command_line(run_dir: Path) -> None:
    scores = json.loads((run_dir / "system" / "scores.json").read_text())
    assert scores["provenance"]["prompt_style"] == "short_answer"
    assert scores["provenance"]["prompt_style_source"] == "answer-file metadata"
    assert scores["provenance"]["decoding"]["decoding"] == "greedy"
    assert scores["provenance"]["data_checksums"]  # the synthetic data directory's files
    comparison = scores["comparison"]
    # a question the baseline did not answer is paired as a wrong answer, as it is scored
    assert comparison["n_paired"] == scores["n"] and comparison["baseline_missing_predictions"] == 1
    assert comparison["tests"]["strict.closed_accuracy"]["test"] == "mcnemar_exact"
    baseline = json.loads((run_dir / "base" / "scores.json").read_text())
    assert baseline["missing_predictions"]["count"] == 1
    # "yes" to every question: strict closed accuracy = share of yes references
    items = [json.loads(line) for line in (run_dir / "base" / "scores.items.jsonl").read_text().splitlines()]
    closed = [i for i in items if i["answer_type"] == "CLOSED"]
    yes = sum(1 for i in closed if i["reference"].lower() == "yes" and i["prediction"] is not None)
    assert baseline["metrics"]["strict"]["closed_accuracy"] == pytest.approx(100 * yes / len(closed))


def test_report_json(run_dir: Path) -> None:
    report = json.loads((run_dir / "out" / "report.json").read_text())
    assert report["title"] == "test report"
    # the label a pipeline gives the same set, so reports pair them
    assert [e["dataset"] for e in report["entries"]] == ["synthetic-medical_vqa-test"]
    # labels: the model directory's parent (a run's OUT/<stage>/model), the baseline file's name
    assert [row["model"] for row in report["headline"]["rows"]] == [run_dir.name, "baseline (baseline)"]
    # the pair compared at scoring time is compared again from the items, and listed once
    assert [c["source"] for c in report["comparisons"]] == ["report --baseline"]
    tests = report["comparisons"][0]["tests"]
    assert set(tests) >= {"strict.closed_accuracy", "llava_med.open_recall"}
    alone = build_report([run_dir / "system"], run_dir / "alone" / "report.html")
    assert [c["source"] for c in alone["comparisons"]] == ["medvlm score --baseline"]
    assert alone["comparisons"][0]["tests"] == tests  # same items, same bootstrap settings
    entry = report["entries"][0]
    assert 0 < len(entry["worst_errors"]) <= 12
    assert all("path" not in json.dumps(row.get("question")) for row in entry["worst_errors"])
    assert [run["method"] for run in report["continual"]] == ["sac", "seq_ft"]
    assert {m["method"]: m["mean"]["bwt"] for m in report["continual_methods"]} == {
        "sac": -8.0,
        "seq_ft": -30.0,
    }


def test_report_html_is_self_contained(run_dir: Path) -> None:
    html = (run_dir / "out" / "report.html").read_text()
    page = Page()
    page.feed(html)
    assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags
    assert all(link.startswith("data:image/png;base64,") for link in page.links), page.links[:3]
    decoded = [
        Image.open(io.BytesIO(base64.b64decode(image["src"].split(",", 1)[1]))) for image in page.images
    ]
    assert all(picture.format == "PNG" and picture.width > 10 for picture in decoded)
    alts = [image.get("alt", "") for image in page.images]
    assert (
        sum(alt.startswith("scores by ") for alt in alts) == 5
    )  # answer type, modality, organ, type, language
    assert "closed-answer confusion matrix" in alts
    assert sum(alt.startswith("accuracy matrix ") for alt in alts) == 2
    assert "continual metrics by method" in alts
    assert sum(alt.startswith("question ") for alt in alts) >= 1  # gallery thumbnails
    for text in (
        "Headline",
        "Comparison with the baseline",
        "Worst errors",
        "Credited only by the lenient metric",
        "Provenance",
        "Continual learning",
        "mcnemar_exact",
        "synthetic-medical_vqa-test",
    ):
        assert text in html


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _webdriver(base: str, method: str, path: str, body: dict | None = None):
    request = urllib.request.Request(base + path, method=method, headers={"Content-Type": "application/json"},
                                     data=None if body is None else json.dumps(body).encode())
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())["value"]


def test_report_renders_in_headless_chromium(run_dir: Path) -> None:
    driver = shutil.which("chromedriver")
    if driver is None or shutil.which("chromium") is None:
        pytest.skip("headless Chromium not installed (Debian packages chromium and chromium-driver)")
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [driver, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        for _ in range(200):
            try:
                _webdriver(base, "GET", "/status")
                break
            except OSError:
                time.sleep(0.05)
        options = {"args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]}
        session = _webdriver(base, "POST", "/session",
                             {"capabilities": {"alwaysMatch": {"goog:chromeOptions": options}}})["sessionId"]
        try:
            _webdriver(base, "POST", f"/session/{session}/url",
                       {"url": (run_dir / "out" / "report.html").resolve().as_uri()})
            state = _webdriver(base, "POST", f"/session/{session}/execute/sync", {"args": [], "script": (
                "return {title: document.title, tables: document.querySelectorAll('table').length,"
                " images: Array.from(document.images).map(i => [i.complete, i.naturalWidth]),"
                " fetched: performance.getEntriesByType('resource').map(e => e.name)};")})
        finally:
            _webdriver(base, "DELETE", f"/session/{session}")
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert state["title"] == "test report"
    assert state["tables"] >= 5
    assert len(state["images"]) >= 9 and all(done and width > 0 for done, width in state["images"])
    assert state["fetched"] == []


def test_report_input_errors(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty"), "--output", str(tmp_path / "r.html")]) == 2
    assert "no scores.json or continual.json inside" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "continual.json").write_text(
        json.dumps({**CONTINUAL, "method": "x", "accuracy": [[1.0, 2.0, 3.0]]})
    )
    assert main(["report", str(bad), "--output", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert "bad/continual.json" in err and "accuracy has 1 rows; expected 3" in err
    (bad / "continual.json").unlink()
    (bad / "scores.json").write_text(json.dumps({"n": 1}))
    assert main(["report", str(bad), "--output", str(tmp_path / "r.html")]) == 2
    assert "key 'metrics': not a medvlm scores.json" in capsys.readouterr().err
