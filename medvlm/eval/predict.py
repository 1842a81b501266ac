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
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from medvlm.data.collate import load_sample_images, sample_image_sizes
from medvlm.data.prompts import apply_prompt_style
from medvlm.data.records import Sample
from medvlm.data.templates import get_template
from medvlm.errors import DataError
from medvlm.eval.answers import question_id
from medvlm.io import append_jsonl
from medvlm.model.build import collator_for, encoder_for, preparer_for

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
    if not path.exists():
        return set()
    done: set[str] = set()
    good_bytes = 0
    size = path.stat().st_size
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                row = json.loads(line)
                done.add(str(row["question_id"]))
            except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
                if good_bytes + len(line) == size and not line.endswith(b"\n"):
                    break  # torn last line
                raise DataError(f"line {number} is not an answer row; fix or remove it before resuming",
                                file=str(path)) from None
            if settings is not None and number == 1:
                _check_same_settings(path, row, settings)
            good_bytes += len(line)
    if good_bytes < size:
        with open(path, "r+b") as handle:
            handle.truncate(good_bytes)
    return done


def _check_same_settings(path: Path, row: dict[str, Any], settings: PredictSettings) -> None:
    recorded = row.get("metadata") if isinstance(row.get("metadata"), dict) else {}
    wanted = {**settings.metadata(), "model_id": settings.model_id}
    found = {**recorded, "model_id": row.get("model_id")}
    differ = [
        f"{key} {found.get(key)!r} → {value!r}" for key, value in wanted.items() if found.get(key) != value
    ]
    if differ:
        raise DataError(f"cannot resume: the file was written with other settings ({'; '.join(differ)}); "
                        "write to a new answer file", file=str(path))


def _batches(items: list[tuple[Sample, list[int]]], size: int) -> Iterator[list[tuple[Sample, list[int]]]]:
    # Image and text-only prompts are batched apart, each sorted by length to cut padding.
    ordered = sorted(items, key=lambda item: (not item[0].has_image, -len(item[1])))
    for start in range(0, len(ordered), size):
        yield ordered[start:start + size]


def _trim_at_stop(text: str, stops: tuple[str, ...]) -> str:
    for stop in stops:
        if stop in text:
            text = text[: text.index(stop)]
    return text.strip()


@torch.inference_mode()
def generate_answers(
    model,
    processor,
    samples: list[Sample],
    settings: PredictSettings,
    output: str | os.PathLike | None = None,
    show_progress: bool = True,
) -> list[dict[str, Any]]:
    """Answer every sample; append answers to ``output`` (JSONL) and return the new ones."""
    template = get_template(settings.template)
    tokenizer = processor.tokenizer
    encoder = encoder_for(model.config, processor, template, max_length=1 << 30, system_prompt=settings.system_prompt)
    preparer = preparer_for(model.config, processor, settings.image_aspect_ratio)
    sized = encoder.image_tokens.needs_sizes
    out_path = Path(output) if output is not None else None
    done = read_answer_ids(out_path, settings) if out_path else set()

    pending: list[tuple[Sample, list[int]]] = []
    seen: set[str] = set()
    for sample in samples:
        qid = str(question_id(sample))
        if qid in seen:
            raise DataError("duplicate question id in the evaluation set", record=qid, key="question_id")
        seen.add(qid)
        if qid not in done:
            styled = apply_prompt_style(sample, settings.prompt_style)
            sizes = sample_image_sizes(styled, preparer) if sized and styled.images else None
            pending.append((styled, encoder.encode_prompt(styled, sizes)))
    if done:
        log.info("resuming: %d answers already in %s, %d to go", len(done), out_path, len(pending))

    model.eval()
    collate = collator_for(model.config, processor, padding_side="left")
    configured = model.generation_config.eos_token_id  # one id, or a list (Qwen2.5-VL, Gemma 3)
    eos = sorted({token for token in [tokenizer.eos_token_id, *(configured if isinstance(configured, list)
                                                                 else [configured])] if token is not None})
    device = next(model.parameters()).device
    written: list[dict[str, Any]] = []
    if out_path:
        out_path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(out_path, "a", encoding="utf-8") if out_path else None
    try:
        progress = tqdm(total=len(pending), desc="predict", disable=not show_progress, unit="q")
        for batch in _batches(pending, settings.batch_size):
            items = [{"input_ids": torch.tensor(ids)} for _, ids in batch]
            for item, (sample, _) in zip(items, batch, strict=True):
                if sample.has_image:
                    item.update(load_sample_images(sample, preparer))
            inputs = {key: value.to(device) for key, value in collate(items).items()}
            if "pixel_values" in inputs:
                inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
            generated = model.generate(**inputs, do_sample=False, num_beams=1, use_cache=True,
                                       max_new_tokens=settings.max_new_tokens,
                                       pad_token_id=tokenizer.pad_token_id, eos_token_id=eos)
            new_tokens = generated[:, inputs["input_ids"].shape[1]:]
            texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            rows = []
            for (sample, _), text in zip(batch, texts, strict=True):
                qid = question_id(sample)
                row = {
                    "question_id": qid,
                    "prompt": sample.question,
                    "text": _trim_at_stop(text, template.stop_strings),
                    "answer_id": answer_id(qid, settings.model_id),
                    "model_id": settings.model_id,
                    "metadata": {
                        **settings.metadata(),
                        "dataset": sample.meta.dataset,
                        "split": sample.meta.split,
                    },
                }
                rows.append(row)
            if handle:  # one flush per batch: a kill loses at most the batch in flight
                append_jsonl(handle, *rows)
            written += rows
            progress.update(len(batch))
        progress.close()
    finally:
        if handle:
            handle.close()
    return written
