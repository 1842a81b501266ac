"""SAC's ratio chosen per task, as LLaVA-c's scripts choose it: sweep r, score, keep the best.

LLaVA-c does not fix r: for each task it consolidates with every r of a grid (0.1 … 1.0) and keeps the
one that scores best on the task's validation data together with general benchmarks. Here, after a
task has trained:

1. θ_{t−1} and θ̂_t are loaded once, and the spectrum of every trained tensor's update is computed
   once (:func:`medvlm.continual.sac.decompose`; exact from the factors after a LoRA stage);
2. for each r the weights are rebuilt in place in the one loaded model (no reload, no disk) and
   scored on (a) a validation slice held out of the task's training data — strict accuracy of greedy
   answers, or the answer-token loss for captions and conversations — and (b) a general validation
   set, as retention = general accuracy / that of the initial model θ_0;
3. ``sac.auto.criterion`` picks r (:func:`choose_ratio`), θ_t is written with the whole sweep in its
   ``consolidation.json`` (and so in ``task.json`` and ``continual.json``).

No test split is ever read (recipe validation refuses a general validation source named test, and
the task's slice is cut from its training data, which the task then does not train on).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch

from medvlm.continual.checkpoints import (
    consolidated_state,
    load_update,
    save_consolidated,
    stored_dtype,
    trained_keys,
)
from medvlm.continual.sac import decompose, rebuild
from medvlm.data.reading import read_spec
from medvlm.data.records import Sample
from medvlm.errors import DataError
from medvlm.eval.predict import PredictSettings
from medvlm.eval.run import strict_accuracy
from medvlm.io import read_json, write_json
from medvlm.model.build import collator_for, load_pretrained
from medvlm.recipe import DataSpec, EvalSpec, Recipe, SacAutoSpec, SourceSpec
from medvlm.train.validation import mean_answer_loss, validation_dataset

log = logging.getLogger("medvlm")


def retention(accuracy: float, baseline: float) -> float:
    """General accuracy relative to the initial model's (1.0 when the initial model scored 0: there was
    nothing to lose)."""
    return accuracy / baseline if baseline > 0 else 1.0


def choose_ratio(results: list[dict[str, Any]], auto: SacAutoSpec) -> float:
    """The ratio ``auto.criterion`` picks from sweep rows ``{ratio, validation, retention}`` (validation:
    higher is better). Ties go to the larger ratio: the update kept more whole."""
    if not results:
        raise ValueError("an empty sweep has no ratio to choose")
    if auto.criterion == "weighted":
        best = max(results, key=lambda row: (row["validation"] + auto.weight * 100.0 * row["retention"],
                                             row["ratio"]))
        return float(best["ratio"])
    eligible = [row for row in results if row["retention"] >= auto.retention_floor]
    if eligible:
        return float(max(eligible, key=lambda row: (row["validation"], row["ratio"]))["ratio"])
    # nothing keeps enough general ability: keep the most of it
    return float(max(results, key=lambda row: (row["retention"], row["validation"], row["ratio"]))["ratio"])


def item_key(sample: Sample) -> tuple[tuple[str, ...], str]:
    """What makes two samples the same question whatever their ids: the images and the question."""
    root = Path(sample.image_root) if sample.image_root else None
    images = tuple(str((root / image) if root and not Path(image).is_absolute() else Path(image))
                   for image in sample.images)
    return images, sample.question.strip()


def check_disjoint(general: list[Sample], probes: list[Sample], trained_on: Collection[Sample] = ()) -> None:
    """Refuse a general validation set that shares questions with a probe (a test set): the ratio
    would be chosen on the data it is judged on (a split name alone proves nothing: some sources
    read one file whatever the split). Refuse one that shares questions with what the task trained
    on as well (general rehearsal drawn from the same file, say): retention measured on questions the
    update has just learned reads high whatever r, and the floor stops guarding."""
    for others, what, why in ((probes, "the probes", "never on what the probes test"),
                              (trained_on, "the task's training data",
                               "not on questions the task has just trained on")):
        keys = {item_key(sample) for sample in others}
        shared = [sample.id for sample in general if item_key(sample) in keys]
        if shared:
            raise DataError(f"sac.auto.general shares {len(shared)} question(s) with {what} (e.g. {shared[0]}): "
                            f"the ratio must be chosen on validation data, {why}")


class RatioSweep:
    """One task's ratio sweep and consolidation (see the module docstring)."""

    def __init__(self, auto: SacAutoSpec, stage: Recipe, probe_eval: EvalSpec, probe_data: DataSpec,
                 initial: Path, cache_dir: Path, probes: list[SourceSpec] | None = None) -> None:
        self.auto = auto
        self.probes = probes or []
        self.stage = stage
        self.initial = initial
        self.cache_dir = cache_dir
        self.settings = PredictSettings(template=probe_eval.template or probe_data.template,
                                        prompt_style=probe_eval.prompt_style, batch_size=auto.batch_size,
                                        max_new_tokens=auto.max_new_tokens, system_prompt=probe_data.system_prompt,
                                        image_aspect_ratio=probe_data.image_aspect_ratio, model_id="ratio-sweep")

    def general_samples(self, trained_on: list[Sample]) -> list[Sample]:
        samples: list[Sample] = []
        for source in self.auto.general:
            samples.extend(read_spec(source).samples)
        if not samples:
            raise DataError("sac.auto.general yielded no sample")
        check_disjoint(samples, [sample for source in self.probes for sample in read_spec(source).samples],
                       trained_on)
        return samples

    def baseline(self, general: list[Sample], dtype: str, device: str) -> float:
        """θ_0's general validation accuracy, loaded and run as the sweep's models are (``dtype`` on
        ``device``), so an unchanged model has retention 1.0 exactly; computed once per run, general set,
        dtype and device (cached beside the initial model's probe answers)."""
        key = json.dumps([str(self.initial), dtype, device, [s.model_dump(mode="json") for s in self.auto.general],
                          self.settings.metadata()], sort_keys=True)
        cache = self.cache_dir / f"sac_general_{hashlib.sha256(key.encode()).hexdigest()[:12]}.json"
        if cache.is_file():
            return float(read_json(cache)["accuracy"])
        model, processor = load_pretrained(self.initial, dtype=dtype)
        model.to(device).eval()
        accuracy = strict_accuracy(model, processor, general, self.settings)
        write_json(cache, {"model": str(self.initial), "dtype": dtype, "device": device, "accuracy": accuracy,
                           "n": len(general)})
        del model
        return accuracy

    def consolidate(self, previous: Path, current: Path, output: Path, components: tuple[str, ...],
                    validation: list[Sample], trained_on: list[Sample]) -> dict[str, Any]:
        """Sweep, choose, write θ_t to ``output``; returns the consolidation summary with the sweep.
        ``validation`` is the held-out slice, ``trained_on`` the task's own training samples."""
        if not validation:
            raise DataError(f"{self.stage.source_file or 'stage'}: sac.ratio auto needs a validation slice, but "
                            "the task's training data left none to hold out")
        general = self.general_samples(trained_on)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        baseline = self.baseline(general, stored_dtype(previous), device)
        update = load_update(previous, current)
        stats: dict[str, Any] = {}
        keys = trained_keys(update, components, stats)
        before = {key: update.previous[key] for key in keys}
        after = {key: update.current[key] for key in keys}
        spectra = decompose(before, after, update.low_rank)
        model, processor = update.model, update.processor
        model.to(device).eval()
        dataset = (validation_dataset(validation, processor, model.config, self.stage.data)
                   if self.auto.metric == "loss" else None)
        collate = collator_for(model.config, processor)
        results = []
        for ratio in self.auto.grid:
            model.load_state_dict(consolidated_state(update, rebuild(before, after, spectra, ratio), keys))
            if dataset is not None:
                loss = mean_answer_loss(model, dataset, collate, self.auto.batch_size)
                score = -loss
            else:
                score = strict_accuracy(model, processor, validation, self.settings)
            general_accuracy = strict_accuracy(model, processor, general, self.settings)
            row = {"ratio": ratio, "validation": round(score, 4), "general_accuracy": round(general_accuracy, 4),
                   "retention": round(retention(general_accuracy, baseline), 4)}
            results.append(row)
            log.info("SAC ratio %.2f: validation %.4f, general %.2f (retention %.3f)", ratio, score,
                     general_accuracy, row["retention"])
        chosen = choose_ratio(results, self.auto)
        state = consolidated_state(update, rebuild(before, after, spectra, chosen, stats), keys)
        sweep = {"criterion": self.auto.criterion, "metric": self.auto.metric,
                 "retention_floor": self.auto.retention_floor, "weight": self.auto.weight,
                 "validation_samples": len(validation), "general_samples": len(general),
                 "baseline_general_accuracy": round(baseline, 4), "results": results, "chosen": chosen}
        summary = {key: value for key, value in stats.items() if key != "tensors"}
        save_consolidated(update, state, output, {"previous": str(previous), "current": str(current), **summary,
                                                  "ratio_sweep": sweep, "tensors": stats.get("tensors", {})})
        log.info("SAC ratio chosen for %s: %.2f (%s)", output, chosen, self.auto.criterion)
        return {**summary, "ratio_sweep": sweep}
