"""Evaluate one model directory on the datasets an eval section names: predict, then score."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from medvlm.data.reading import read_spec, source_spec
from medvlm.data.records import Sample
from medvlm.errors import DataError
from medvlm.eval.answers import question_id, read_answers
from medvlm.eval.items import answer_type_of, evaluate_item
from medvlm.eval.predict import PredictSettings, generate_answers
from medvlm.eval.score import items_path, score_answers
from medvlm.io import check_new_output, check_output_file, record_written, sha256_file
from medvlm.model.export import load_for_inference, prompt_settings
from medvlm.recipe import EvalSpec
from medvlm.rundir import EvalDir, StageDir, model_label

log = logging.getLogger("medvlm")


def dataset_label(dataset: str, split: str, options: dict[str, Any] | None = None) -> str:
    """How reports name an evaluation set; pipelines and ``medvlm score`` must agree, since reports
    pair a system with its baseline by this name."""
    subset = (options or {}).get("subset")
    return f"{dataset}-{subset}-{split}" if subset else f"{dataset}-{split}"


def model_provenance(model_dir: str | Path) -> dict[str, Any]:
    """Name of a model directory (a run's ``OUT/<stage>/model`` is named by its stage) and the hash of
    the resolved recipe that trained it, when the run left one beside it."""
    model_dir = Path(model_dir)
    recipe = StageDir(model_dir.parent).recipe
    record: dict[str, Any] = {"model": str(model_dir), "model_label": model_label(model_dir)}
    if recipe.is_file():
        record.update({"recipe": str(recipe), "recipe_sha256": sha256_file(recipe)})
    return record


def strict_accuracy(model, processor, samples: list[Sample], settings: PredictSettings) -> float:
    """Pooled strict accuracy (percent) of a model held in memory: closed answers correct by parsed
    label plus open answers matching exactly, over n — the continual runs' probe accuracy, without
    answer files (a ratio sweep scores many candidate weights of one loaded model)."""
    if not samples:
        raise DataError("nothing to score: the sample list is empty")
    rows = {row["question_id"]: row for row in generate_answers(model, processor, samples, settings,
                                                                show_progress=False)}
    correct = 0.0
    for sample in samples:
        answer_type = answer_type_of(sample)[0]
        strict = evaluate_item(sample, rows.get(question_id(sample)), answer_type)["strict"]
        correct += strict["correct"] if answer_type == "CLOSED" else strict["exact_match"]
    return 100.0 * correct / len(samples)


def evaluate_model(model_dir: str | Path, spec: EvalSpec, out_dir: str | Path, *, template: str,
                   system_prompt: str | None, image_aspect_ratio: str, policy: str = "error",
                   name: str | None = None) -> dict[str, dict[str, Any]]:
    """Answer files and scores for every dataset in ``spec``, written under ``out_dir/<dataset>/``.

    ``name`` is how reports label the model (default: from its directory, :func:`medvlm.rundir.model_label`).
    """
    model, processor = load_for_inference(model_dir)
    results: dict[str, dict[str, Any]] = {}
    for source in spec.datasets:
        label = dataset_label(source.dataset, source.split, source.options)
        read = read_spec(source, policy=policy, limit=spec.limit)  # type: ignore[arg-type]
        samples, report = read.samples, read.report
        if not samples:
            raise DataError(f"evaluation set {label} is empty", file=source.path)
        settings = PredictSettings(template=spec.template or template, prompt_style=spec.prompt_style,
                                   batch_size=spec.batch_size, max_new_tokens=spec.max_new_tokens,
                                   system_prompt=system_prompt, image_aspect_ratio=image_aspect_ratio,
                                   model_id=str(model_dir))
        target = EvalDir(Path(out_dir) / label)
        answers_path = target.answers
        generate_answers(model, processor, samples, settings, output=answers_path)
        result = score_answers(
            samples,
            read_answers(answers_path),
            bootstrap=spec.bootstrap_samples,
            seed=spec.seed,
            data_files=[source.path] if source.path else None,
            provenance={
                **model_provenance(model_dir),
                **({"model_label": name} if name else {}),
                "dataset": label,
                "dataset_source": source.dataset,
                "data_path": source.path,
                "split": source.split,
                "source_options": source.options,
                "skipped_records": report.skipped,
            },
        )
        result.write(target.scores)
        scores = result.scores
        strict = scores["metrics"]["strict"]
        log.info("%s on %s: closed %.2f, open exact %.2f (n=%d)", model_dir, label,
                 strict["closed_accuracy"] or 0.0, strict["open_exact_match"] or 0.0, scores["n"])
        results[label] = scores
    return results


def score_dataset(dataset: str, path: str | None, split: str, predictions: str | Path, output: str | Path, *,
                  image_root: str | None = None, options: dict[str, Any] | None = None, policy: str = "error",
                  baseline: str | Path | None = None, bootstrap: int = 1000, seed: int = 0,
                  overwrite: bool = False) -> dict[str, Any]:
    """``medvlm score``: read the references and answer file(s), score, write scores.json + items
    (replacing earlier files only where medvlm wrote them, or with ``overwrite``)."""
    for written in (output, items_path(output)):
        check_new_output(written, inputs=[path, predictions, baseline], overwrite=overwrite)
    read = read_spec(source_spec(dataset, path, split, image_root=image_root, options=options),
                     policy=policy, image_check="none")  # type: ignore[arg-type]  # scoring reads no pixels
    samples, report = read.samples, read.report
    if not samples:
        raise DataError(f"no '{split}' samples in the data set", file=path)
    answers = read_answers(predictions, policy)  # type: ignore[arg-type]
    model_id = answers.describe().get("model_id")
    # a model directory that still exists: its name and the recipe that trained it, when beside it
    model = model_provenance(model_id) if isinstance(model_id, str) and Path(model_id).is_dir() else {}
    result = score_answers(
        samples, answers, policy=policy, bootstrap=bootstrap, seed=seed,  # type: ignore[arg-type]
        baseline=read_answers(baseline, policy) if baseline else None,  # type: ignore[arg-type]
        data_files=[path] if path else None,
        provenance={**model, "dataset": dataset_label(dataset, split, options), "dataset_source": dataset,
                    "data_path": path,
                    "split": split, "source_options": options or {}, "skipped_records": report.skipped,
                    "skip_reasons": report.summary()["skip_reasons"]},
    )
    record_written(output, result.write(output))
    return result.scores


def predict_dataset(
    model_dir: str | Path,
    dataset: str,
    path: str | None,
    split: str,
    output: str | Path,
    *,
    image_root: str | None = None,
    options: dict[str, Any] | None = None,
    policy: str = "error",
    limit: int | None = None,
    template: str | None = None,
    prompt_style: str = "plain",
    batch_size: int = 16,
    max_new_tokens: int = 32,
    system_prompt: str | None = None,
    image_aspect_ratio: str = "pad",
    model_id: str | None = None,
    dtype: str | None = None,
) -> tuple[int, int]:
    """``medvlm predict``: answer a data set into a (resumable) answer file; (written now, total).

    ``template`` and ``system_prompt`` default to those the model was trained with (its
    ``prompt.json`` or run recipe), so a model is prompted as it learned to answer.
    """
    # before minutes of loading: a directory, a path under a file or the data file itself cannot be written
    check_output_file(output, inputs=[path])
    # bad images are bad records: skipped and counted under --on-bad-record skip, named with the data file
    read = read_spec(source_spec(dataset, path, split, image_root=image_root, options=options, limit=limit),
                     policy=policy)  # type: ignore[arg-type]
    samples, report = read.samples, read.report
    if report.skipped:
        log.warning("%s: skipped %d bad record(s): %s", path, report.skipped, report.summary()["skip_reasons"])
    if not samples:
        raise DataError(f"no '{split}' samples in the data set", file=path)
    template, system_prompt = prompt_settings(model_dir, template, system_prompt)
    model, processor = load_for_inference(model_dir, dtype=dtype)
    settings = PredictSettings(template=template, prompt_style=prompt_style, batch_size=batch_size,
                               max_new_tokens=max_new_tokens, system_prompt=system_prompt,
                               image_aspect_ratio=image_aspect_ratio, model_id=model_id or str(model_dir))
    try:
        answers = generate_answers(model, processor, samples, settings, output=output)
    except DataError as exc:  # an image that passed the header check but does not decode: name the data file
        if exc.file is not None:
            raise
        raise DataError(exc.detail, file=path, record=exc.record, key=exc.key) from None
    return len(answers), len(samples)
