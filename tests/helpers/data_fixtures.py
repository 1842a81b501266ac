"""Writers for small fixture files in the published formats (tests build their own data)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image


def write_image(path: Path, size: tuple[int, int] = (12, 8), colour: tuple[int, int, int] = (200, 60, 30),
                mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour if mode == "RGB" else colour[0]).save(path)
    return path


def write_json(path: Path, data: Any, **dump_options: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, **dump_options), encoding="utf-8")
    return path


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


# VQA-RAD OSF records with the release's quirks (shared by the vqa_rad and inspect/convert tests)


def osf(qid, phrase, image, question, answer, answer_type, question_type="PRES", organ="HEAD", **more):
    record = {"qid": qid, "phrase_type": phrase, "qid_linked_id": f"uuid-{qid}",
              "image_case_url": "https://medpix.nlm.nih.gov/case?id=x", "image_name": image, "image_organ": organ,
              "evaluation": "not evaluated", "question": question, "question_rephrase": "NULL",
              "question_relation": "NULL", "question_frame": "NULL", "question_type": question_type,
              "answer": answer, "answer_type": answer_type}
    record.update(more)
    return record


OSF_RECORDS = [
    osf("0", "freeform", "synpic1.jpg", "Are regions of the brain infarcted?", "Yes", "CLOSED"),  # string qid
    osf(1, "para", "synpic1.jpg", "Is the brain infarcted?", "Yes", "CLOSED"),
    osf(2, "freeform", "synpic2.jpg", "How many lesions?", 4, "OPEN", "COUNT", "CHEST"),  # int answer
    osf(10, "test_freeform", "synpic2.jpg", "Is there evidence of an aortic aneurysm?", "yes",
        "CLOSED ",  # trailing space
        "POS,PRES", "CHEST"),
    osf(11, "test_para", "synpic2.jpg", "Is an aortic aneurysm present?", "yes", "CLOSED", "Other", "CHEST"),
    osf(12, "test_freeform", "synpic3.jpg", "What organ is shown?", "liver", "OPEN", "ORGAN", "ABD"),
]
del OSF_RECORDS[2]["question_rephrase"]  # two OSF records lack the key entirely
