"""The judge's prompts on LLaVA-Med's real qa50 file (no judge is called)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from medvlm.data.sources import read_source
from medvlm.eval.judge import JUDGE_INSTRUCTION, domain_of, judge_messages

pytestmark = pytest.mark.realdata

QA50 = "llava_med/data/eval/llava_med_eval_qa50_qa.jsonl"


def test_real_qa50_prompts_and_domains(real_data: Path) -> None:
    samples, _ = read_source("llava_med", str(real_data / QA50), "test", format="qa50")
    assert len(samples) == 193
    counts = Counter(domain_of(sample.meta.extra.get("domain")) for sample in samples)
    # LLaVA-Med's rule: the first flag in chest_xray, mri, histology, gross, ct_scan order
    assert counts == {"Histology": 44, "CT": 40, "MRI": 38, "CXR": 37, "Gross": 34}
    assert sum(s.meta.question_type == "conversation" for s in samples) == 143
    first = judge_messages(samples[0], "An answer.")[1]["content"]
    assert first.startswith(
        "[Context]\nFigure Caption:\nFig. 3: The gross histopathologic finding disclosed the portion of conjunctiva")
    assert "Figure Context:\n\t- [{'tokens': 'Inflammatory cells were not found in the vicinity ( Fig. 3 , 4 , 5 ) .'" \
        in first
    assert "[Question]\nWhat is the organ in the image?\n<image>\n\n[Assistant 1]\nThe organ in the image is the " \
        "conjunctiva" in first
    assert first.endswith(f"[Assistant 2]\nAn answer.\n\n[End of Assistant 2]\n\n[System]\n{JUDGE_INSTRUCTION}\n\n")
