"""``medvlm data convert``: any source → LLaVA conversation JSON for training elsewhere (or here).

The output is LLaVA-Med's downstream format (METHODS.md §2): ``{"id", "image", "answer_type",
"question_type", "conversations": [{"from": "human", "value": "question\\n<image>"}, {"from": "gpt",
"value": answer}]}``, plus ``modality``, ``organ``, ``language``, ``dataset`` and ``split`` when known —
the fields the ``llava`` source reads back. ``id`` is the dataset's own id (VQA-RAD/SLAKE qid), so
answer files written for a converted test set still join to the original ids. Image paths are
written relative to one image root (the common root of all samples), which the command reports:
pass it as ``image_root`` when training on the converted file. ``prompt_style`` optionally bakes
in LLaVA-1.5's short-answer instruction or LLaVA-Med's closed-question suffix; ``image_position``
puts ``<image>`` after the question (LLaVA-Med's files) or before it. ``.jsonl`` outputs are written
one record per line. Writes are atomic.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from medvlm.data.images import ImageCheckMode, resolve_image_path
from medvlm.data.reading import read_spec, source_spec
from medvlm.data.records import IMAGE_PLACEHOLDER, Sample
from medvlm.errors import DataError
from medvlm.io import check_new_output, record_written, write_json, write_jsonl

ImagePosition = Literal["end", "front"]
META_KEYS = ("answer_type", "question_type", "modality", "organ", "language")


def _place_image(text: str, position: ImagePosition) -> str:
    question = text.replace(IMAGE_PLACEHOLDER, "").strip()
    return f"{question}\n{IMAGE_PLACEHOLDER}" if position == "end" else f"{IMAGE_PLACEHOLDER}\n{question}"


def to_llava_record(sample: Sample, images: list[str], image_position: ImagePosition) -> dict[str, Any]:
    turns = [{"from": "human" if turn.role == "user" else "gpt", "value": turn.text} for turn in sample.turns]
    if len(images) == 1 and turns and sample.turns[0].role == "user":
        turns[0]["value"] = _place_image(turns[0]["value"], image_position)
    record: dict[str, Any] = {"id": sample.meta.source_id or sample.id}
    if images:
        record["image"] = images[0] if len(images) == 1 else images
    for key in META_KEYS:
        value = getattr(sample.meta, key)
        if value is not None:
            record[key] = value
    record.update({"dataset": sample.meta.dataset, "split": sample.meta.split, "conversations": turns})
    return record


def _common_root(samples: list[Sample]) -> Path | None:
    roots = {str(Path(s.image_root).resolve()) for s in samples if s.images and s.image_root is not None}
    return Path(os.path.commonpath(sorted(roots))) if roots else None


def _relative(image: str, sample: Sample, root: Path | None) -> str:
    resolved = resolve_image_path(image, sample.image_root)
    return os.path.relpath(resolved, root) if root is not None and sample.image_root is not None else image


def convert_dataset(name: str, path: str | None, split: str, output: str | os.PathLike, *,
                    image_root: str | None = None, options: dict[str, Any] | None = None,
                    prompt_style: str = "plain", image_position: ImagePosition = "end",
                    policy: Literal["error", "skip"] = "error", limit: int | None = None,
                    image_check: ImageCheckMode = "header", overwrite: bool = False) -> dict[str, Any]:
    """Write ``output`` and return a summary (counts, image root, skipped records).

    ``output`` must not be the data file read, and replaces an existing file only when medvlm wrote it
    (a rerun) or with ``overwrite``.

    Images are checked as training checks them (``image_check``), so a converted file never names an
    image that is missing, unreadable or outside its root.
    """
    if image_position not in ("end", "front"):
        raise DataError(f"image_position must be end or front, got {image_position!r}")
    check_new_output(output, inputs=[path], overwrite=overwrite)
    read = read_spec(source_spec(name, path, split, image_root=image_root, options=options, limit=limit),
                     policy=policy, prompt_style=prompt_style, image_check=image_check)
    samples, report = read.samples, read.report
    root = _common_root(samples)
    records = []
    for sample in samples:
        try:
            images = [_relative(image, sample, root) for image in sample.images]
        except DataError as exc:  # a path outside its image root: a bad record like any other
            report.problem(str(exc).removeprefix("key 'image': "), file=path, record=sample.meta.source_id or sample.id,
                           key="image")
            continue
        records.append(to_llava_record(sample, images, image_position))
    report.kept = len(records)
    ids = [record["id"] for record in records]
    if len(set(ids)) != len(ids):
        raise DataError("converted ids are not unique; convert one split at a time", file=path, key="id")
    out = Path(output)
    if out.suffix.lower() == ".jsonl":
        write_jsonl(out, records)
    else:
        write_json(out, records)
    record_written(out)
    return {"output": str(out), "records": len(records), "image_root": str(root) if root else None,
            "prompt_style": prompt_style, "image_position": image_position, **report.summary()}
