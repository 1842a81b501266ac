"""scores.json, its item rows and report.json pinned for a small fixed input.

scores.json is a contract (DESIGN.md): metric code may be reorganised, but the same answers must give
the same files. The expected content lives in ``eval_pinned.json`` beside this test; only fields that
name the machine or the moment (temporary paths, git commit, creation time, package version) are
masked. After a deliberate change to the figures, rewrite the file with ``MEDVLM_UPDATE_PINNED=1``
and say why in the commit.

A metric family registered after the file was written only adds to these files: its entries are
left out before comparing, so the test also checks that a new family changes no existing figure.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from medvlm.data.records import SampleMeta, vqa_sample
from medvlm.eval.answers import answers_from_rows
from medvlm.eval.metrics import METRICS
from medvlm.eval.report import build_report
from medvlm.eval.score import score_answers

PINNED = Path(__file__).with_name("eval_pinned.json")

# qid, answer type, modality, organ, question, reference, system answer, baseline answer (None: missing)
ROWS = [
    (1, "CLOSED", "CT", "CHEST", "Is there a mass?", "yes", "Yes.", "yes"),
    (2, "CLOSED", "CT", "CHEST", "Is it normal?", "no", "Not sure", "yes"),
    (3, "CLOSED", "MRI", "HEAD", "Is there bleeding?", "yes", "No", "yes"),
    (4, "CLOSED", "MRI", "HEAD", "Is the brain normal?", "no", "Yes, there is a mass", None),
    (5, "CLOSED", "CT", "ABD", "Which side? Please choose from the following two options: [left, right]",
     "left", "left side", "right"),
    (6, "CLOSED", "XR", "ABD", "Is the liver enlarged?", "yes", "I cannot tell", "yes"),
    (7, "CLOSED", "XR", None, "Is this an MRI?", "no", None, "no"),
    (8, "OPEN", "CT", "CHEST", "Which lung is affected?", "left lung", "The left lung", "lung"),
    (9, "OPEN", "CT", "CHEST", "Which lung is affected?", "left lung", "Right lung", "left lung"),
    (10, "OPEN", "MRI", "HEAD", "How was it imaged?", "ct with contrast", "CT", "ct with contrast"),
    (11, "OPEN", "XR", "ABD", "Which system?", "urinary", "kidney", "urinary tract"),
    (12, "OPEN", "XR", None, "How large is the lesion?", "3.5 cm", "about 3.5 cm.", None),
    (13, "OPEN", "CT", "ABD", "What organ?", "liver", None, "spleen"),
    (14, "OPEN", "MRI", "HEAD", "What is seen?", "two lesions", "There are 2 lesions in the left frontal lobe",
     "2 lesions"),
]


def _samples() -> list:
    return [
        vqa_sample(id=f"s{qid}", question=question, answer=reference,
                   meta=SampleMeta(dataset="pinned", split="test", answer_type=kind, modality=modality, organ=organ,
                                   source_id=str(qid)))
        for qid, kind, modality, organ, question, reference, _, _ in ROWS
    ]


def _answers(column: int, path: str):
    return answers_from_rows([{"question_id": row[0], "prompt": row[4], "text": row[column]}
                              for row in ROWS if row[column] is not None], path)


def _masked(value: Any, tmp: Path) -> Any:
    """The JSON content with what names the machine or the moment replaced by placeholders."""
    text = json.dumps(value, sort_keys=False).replace(str(tmp), "<tmp>")
    content = json.loads(text)

    def mask(node: Any) -> None:
        if isinstance(node, dict):
            for key in ("git_commit", "created", "medvlm_version"):
                if key in node:
                    node[key] = f"<{key}>"
            for child in node.values():
                mask(child)
        elif isinstance(node, list):
            for child in node:
                mask(child)

    mask(content)
    return content


def _without(node: Any, families: set[str]) -> Any:
    """``node`` without what belongs to ``families``: keys and list entries ``<family>`` or ``<family>.*``."""

    def theirs(text: Any) -> bool:
        return isinstance(text, str) and text.split(".", 1)[0] in families

    if isinstance(node, dict):
        return {key: _without(value, families) for key, value in node.items() if not theirs(key)}
    if isinstance(node, list):
        return [_without(value, families) for value in node if not theirs(value)]
    return node


def _produce(tmp: Path) -> dict[str, Any]:
    samples = _samples()
    system = score_answers(samples, _answers(6, "system.jsonl"), bootstrap=200, seed=3,
                           baseline=_answers(7, "baseline.jsonl"),
                           provenance={"dataset": "pinned-test", "model_label": "system"})
    system.write(tmp / "system" / "scores.json")
    baseline = score_answers(samples, _answers(7, "baseline.jsonl"), bootstrap=200, seed=3,
                             provenance={"dataset": "pinned-test", "model_label": "baseline"})
    baseline.write(tmp / "baseline" / "scores.json")
    build_report([tmp / "system"], tmp / "report" / "report.html", baseline=[tmp / "baseline"])
    return _masked({
        "scores": json.loads((tmp / "system" / "scores.json").read_text()),
        "items": [json.loads(line) for line in (tmp / "system" / "scores.items.jsonl").read_text().splitlines()],
        "report": json.loads((tmp / "report" / "report.json").read_text()),
    }, tmp)


def test_scores_items_and_report_are_pinned(tmp_path: Path) -> None:
    produced = _produce(tmp_path)
    if os.environ.get("MEDVLM_UPDATE_PINNED") == "1":
        PINNED.write_text(json.dumps(produced, indent=1, ensure_ascii=False) + "\n")
    expected = json.loads(PINNED.read_text())
    produced = _without(produced, set(METRICS.names()) - set(expected["scores"]["metrics"]))
    for part in ("scores", "items", "report"):
        # key order is part of the contract too (the files are read by people and diffed)
        assert json.dumps(produced[part]) == json.dumps(expected[part]), part
