"""The embedded synthetic data (see :mod:`medvlm.data.synthetic`), generated on first use.

Options: ``subset`` (general_caption, general_vqa, general_instruct, medical_caption, medical_vqa,
medical_instruct, general_text — text-only general questions, e.g. UIR's inquiries),
``question_types`` (keep only these, e.g. ``[MODALITY]`` for a continual task), and the generator
settings ``seed``, ``image_size``, ``general_images``, ``medical_images``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

from medvlm.data.records import Sample
from medvlm.data.sources import ReadReport, register_source
from medvlm.data.sources.llava import read_conversation_file
from medvlm.data.synthetic import SUBSETS, SyntheticSpec, materialise
from medvlm.errors import DataError

_SPEC_FIELDS = {field.name for field in fields(SyntheticSpec)} - {"version"}


@register_source("synthetic")
def read(path: str | None, split: str, report: ReadReport, subset: str = "medical_vqa",
         question_types: list[str] | None = None, image_root: str | None = None,
         **options: Any) -> Iterator[Sample]:
    if path is None:
        raise DataError("the synthetic source needs a path (a directory to generate the data in)")
    unknown = set(options) - _SPEC_FIELDS
    if unknown:
        raise DataError(f"unknown option(s) for the synthetic source: {', '.join(sorted(unknown))}; "
                        f"known: subset, question_types, {', '.join(sorted(_SPEC_FIELDS))}", file=path)
    if subset not in SUBSETS:
        raise DataError(f"unknown subset '{subset}'; known: {', '.join(SUBSETS)}", file=path, key="subset")
    root = materialise(path, SyntheticSpec(**options))
    file = Path(root) / f"{subset}_{split}.json"
    if not file.is_file():
        raise DataError(f"no '{split}' split for subset '{subset}'", file=str(root), key="split")
    wanted = {q.upper() for q in question_types} if question_types else None
    for sample in read_conversation_file(file, split, report, dataset=f"synthetic_{subset}",
                                         image_root=str(Path(root) / "images")):
        if wanted is None or (sample.meta.question_type or "").upper() in wanted:
            yield sample
