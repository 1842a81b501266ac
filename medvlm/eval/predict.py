"""Batched greedy generation into a LLaVA answer file.

Answer files follow the LLaVA convention, one JSON object per line::

    {"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}

so answer files of other models (LLaVA-Med's included) can be scored the same way. Decoding is
greedy (LLaVA-Med's published numbers used temperature 0.7 sampling, one reason they are hard to
reproduce); prompts are left-padded and batched by length with a KV cache, and the outputs equal
those of batch size 1. Each finished batch is flushed to disk, and a rerun skips question ids
already answered, so a killed prediction resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medvlm.data.prompts import apply_prompt_style
from medvlm.data.records import Sample
from medvlm.errors import DataError
from medvlm.eval.answers import question_id
from medvlm.eval.generation import GenerationItem, Generator
from medvlm.eval.progress import progress_bar
from medvlm.io import append_jsonl, check_output_file, read_appended_rows

log = logging.getLogger("medvlm")


@dataclass
class PredictSettings:
    template: str = "vicuna_v1"
    prompt_style: str = "plain"
    batch_size: int = 16
    max_new_tokens: int = 32
    system_prompt: str | None = None
    image_aspect_ratio: str = "pad"
    model_id: str = "medvlm"

    def metadata(self) -> dict[str, Any]:
        return {"template": self.template, "prompt_style": self.prompt_style, "decoding": "greedy",
                "max_new_tokens": self.max_new_tokens, "image_aspect_ratio": self.image_aspect_ratio}


def answer_id(qid: int | str, model_id: str) -> str:
    return hashlib.sha256(f"{model_id}\0{qid}".encode()).hexdigest()[:22]


def read_answer_ids(path: Path, settings: PredictSettings | None = None) -> set[str]:
    """Ids already answered in ``path``, for resuming.

    A torn last line (a run killed mid-write) is cut off so appends stay valid; a bad line anywhere
    else is an error, never a reason to drop the answers after it. When ``settings`` are given, the
    file must have been written with the same model, prompt and decoding settings — resuming with
    others would mix two experiments in one answer file.
    """
    check_output_file(path)
    rows = read_appended_rows(path, lambda row: isinstance(row, dict) and "question_id" in row, "an answer row")
    if settings is not None and rows:
        _check_same_settings(path, rows[0], settings)
    return {str(row["question_id"]) for row in rows}


def _check_same_settings(path: Path, row: dict[str, Any], settings: PredictSettings) -> None:
    recorded = row.get("metadata")
    if not isinstance(recorded, dict) or "decoding" not in recorded:
        # not a difference of settings: the file does not say how its answers were made (another
        # tool's answer file, or a hand-edited or damaged first row)
        raise DataError("cannot resume: line 1 has no medvlm 'metadata' record (decoding, prompt style, ...), so "
                        "it is unknown how these answers were made; write to a new answer file",
                        file=str(path), record=str(row.get("question_id")), key="metadata")
    wanted = {**settings.metadata(), "model_id": settings.model_id}
    found = {**recorded, "model_id": row.get("model_id")}
    differ = [
        f"{key} {found.get(key)!r} → {value!r}" for key, value in wanted.items() if found.get(key) != value
    ]
    if differ:
        raise DataError(f"cannot resume: the file was written with other settings ({'; '.join(differ)}); "
                        "write to a new answer file", file=str(path))


def unanswered(samples: list[Sample], done: set[str], prompt_style: str) -> list[Sample]:
    """The samples not yet in the answer file, prompt style applied; a repeated question id is an error."""
    pending: list[Sample] = []
    seen: set[str] = set()
    for sample in samples:
        qid = str(question_id(sample))
        if qid in seen:
            raise DataError("duplicate question id in the evaluation set", record=qid, key="question_id")
        seen.add(qid)
        if qid not in done:
            pending.append(apply_prompt_style(sample, prompt_style))
    return pending


def _batches(items: list[tuple[Sample, list[int]]], size: int) -> Iterator[list[tuple[Sample, list[int]]]]:
    # Image and text-only prompts are batched apart, each sorted by length to cut padding.
    ordered = sorted(items, key=lambda item: (not item[0].has_image, -len(item[1])))
    for start in range(0, len(ordered), size):
        yield ordered[start:start + size]


def generate_answers(
    model,
    processor,
    samples: list[Sample],
    settings: PredictSettings,
    output: str | os.PathLike | None = None,
    show_progress: bool = True,
) -> list[dict[str, Any]]:
    """Answer every sample; append answers to ``output`` (JSONL) and return the new ones."""
    generator = Generator(model, processor, settings.template, settings.system_prompt,
                          settings.image_aspect_ratio)  # type: ignore[arg-type]
    out_path = Path(output) if output is not None else None
    done = read_answer_ids(out_path, settings) if out_path else set()

    pending = [(styled, generator.prompt_ids(styled))
               for styled in unanswered(samples, done, settings.prompt_style)]
    if done:
        log.info("resuming: %d answers already in %s, %d to go", len(done), out_path, len(pending))

    written: list[dict[str, Any]] = []
    if out_path:
        out_path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(out_path, "a", encoding="utf-8") if out_path else None
    try:
        progress = progress_bar(len(pending), "predict", show=show_progress)
        for batch in _batches(pending, settings.batch_size):
            items = [GenerationItem(ids, generator.sample_pixels(sample), settings.max_new_tokens, generator.stops)
                     for sample, ids in batch]
            answers = generator.generate(items)
            rows = [answer_row(sample, answer.text, settings)
                    for (sample, _), answer in zip(batch, answers, strict=True)]
            if handle:  # one flush per batch: a kill loses at most the batch in flight
                append_jsonl(handle, *rows)
            written += rows
            progress.update(len(batch))
        progress.close()
    finally:
        if handle:
            handle.close()
    return written


def answer_row(sample: Sample, text: str, settings: PredictSettings) -> dict[str, Any]:
    """One answer-file row (LLaVA convention) for ``sample``."""
    qid = question_id(sample)
    return {
        "question_id": qid,
        "prompt": sample.question,
        "text": text,
        "answer_id": answer_id(qid, settings.model_id),
        "model_id": settings.model_id,
        "metadata": {**settings.metadata(), "dataset": sample.meta.dataset, "split": sample.meta.split},
    }
