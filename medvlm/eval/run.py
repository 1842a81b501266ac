"""Evaluate one model directory on the datasets an eval section names: predict, then score."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from medvlm.data.sources import read_source
from medvlm.errors import DataError
from medvlm.eval.predict import PredictSettings, generate_answers
from medvlm.eval.score import read_answers, score
from medvlm.io import write_json
from medvlm.model.build import load_pretrained
from medvlm.recipe import EvalSpec, SourceSpec

log = logging.getLogger("medvlm")


def dataset_label(spec: SourceSpec) -> str:
    subset = spec.options.get("subset")
    return f"{spec.dataset}-{subset}-{spec.split}" if subset else f"{spec.dataset}-{spec.split}"


def evaluate_model(model_dir: str | Path, spec: EvalSpec, out_dir: str | Path, *, template: str,
                   system_prompt: str | None, image_aspect_ratio: str, policy: str = "error",
                   ) -> dict[str, dict[str, Any]]:
    """Answer files and scores for every dataset in ``spec``, written under ``out_dir/<dataset>/``."""
    model, processor = load_pretrained(model_dir)
    results: dict[str, dict[str, Any]] = {}
    for source in spec.datasets:
        label = dataset_label(source)
        limits = [n for n in (source.limit, spec.limit) if n is not None]
        samples, report = read_source(source.dataset, source.path, source.split, policy=policy,  # type: ignore[arg-type]
                                      limit=min(limits) if limits else None, image_root=source.image_root,
                                      **source.options)
        if not samples:
            raise DataError(f"evaluation set {label} is empty", file=source.path)
        settings = PredictSettings(template=spec.template or template, prompt_style=spec.prompt_style,
                                   batch_size=spec.batch_size, max_new_tokens=spec.max_new_tokens,
                                   system_prompt=system_prompt, image_aspect_ratio=image_aspect_ratio,
                                   model_id=str(model_dir))
        target = Path(out_dir) / label
        answers_path = target / "answers.jsonl"
        generate_answers(model, processor, samples, settings, output=answers_path)
        scores = score(samples, read_answers(answers_path), answers_file=str(answers_path), provenance={
            "model": str(model_dir), "dataset": label, "data_path": source.path, **settings.metadata(),
            "skipped_records": report.skipped})
        write_json(target / "scores.json", scores)
        strict = scores["metrics"]["strict"]
        log.info("%s on %s: closed %.2f, open exact %.2f (n=%d)", model_dir, label,
                 strict["closed_accuracy"] or 0.0, strict["open_exact_match"] or 0.0, scores["n"])
        results[label] = scores
    return results
