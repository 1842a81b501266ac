"""A minimal reader of OSF VQA-RAD records for evaluation tests.

The real reader is the ``vqa_rad`` source (data issue); this keeps the evaluation tests independent
of it: test split = phrase_type test_freeform/test_para, ``source_id`` = str(qid), reference = the
answer as text, answer_type stripped ("CLOSED " occurs), organ = image_organ.
"""

from __future__ import annotations

import json
from pathlib import Path

from medvlm.data.records import SampleMeta, vqa_sample


def osf_test_samples(records: list[dict] | str | Path, image_root: str | None = None):
    if not isinstance(records, list):
        records = json.loads(Path(records).read_text(encoding="utf-8"))
    return [
        vqa_sample(
            id=str(r["qid"]),
            question=r["question"],
            answer=str(r["answer"]),
            image=r["image_name"],
            image_root=image_root,
            meta=SampleMeta(
                dataset="vqa_rad",
                split="test",
                answer_type=r["answer_type"].strip().upper(),
                organ=r["image_organ"],
                question_type=r["question_type"],
                source_id=str(r["qid"]),
            ),
        )
        for r in records
        if r["phrase_type"] in ("test_freeform", "test_para")
    ]
