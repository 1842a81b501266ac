"""Run one training stage from a recipe.

The output directory is prepared by :mod:`medvlm.train.outputs` and its files are named in
:mod:`medvlm.rundir` (every file written atomically); ``DIR/model`` appears only when training
finished, so its presence means "stage complete".
"""

from __future__ import annotations

import gc
import logging
import pickle
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import set_seed

from medvlm.claims import claim
from medvlm.data.reading import read_samples
from medvlm.data.records import Sample
from medvlm.distributed import barrier, forget_deepspeed_config, is_main_process, zero_stage
from medvlm.errors import DataError, MedvlmError, ModelError
from medvlm.io import write_json, write_text
from medvlm.model.adapters import check_peft_plan
from medvlm.model.build import preparer_for, trainable_components
from medvlm.provenance import provenance
from medvlm.recipe import Recipe
from medvlm.train.arguments import training_arguments, training_callbacks
from medvlm.train.contrastive import contrastive_setup
from medvlm.train.outputs import prepare_output_dir
from medvlm.train.saving import finish_adapter_run
from medvlm.train.setup import prepare_model, supervised_setup
from medvlm.train.trainer import (
    LossPlugin,
    MedvlmTrainer,
    check_resumable,
    latest_checkpoint,
    unloadable_checkpoint_file,
)

log = logging.getLogger("medvlm")

SETUPS = {"contrastive": contrastive_setup}  # stage kinds that train on other data than conversations


@dataclass
class StageResult:
    output_dir: Path
    model_dir: Path
    summary: dict[str, Any]


def run_stage(recipe: Recipe, *, resume: bool = False, loss_plugins: list[LossPlugin] | None = None,
              extra_samples: list[Sample] | None = None, held_out: Collection[str] = ()) -> StageResult:
    """Train one stage as the recipe says; returns where the final model is.

    ``extra_samples`` join the recipe's training data (continual learning: replayed samples of
    earlier tasks, UIR's unlabeled inquiries); samples whose id is in ``held_out`` are left out (a
    validation slice the stage must not train on). Both are counted in ``data_report.json``. The
    output directory is claimed (:mod:`medvlm.claims`) for the whole run.
    """
    if not recipe.data.train:
        raise MedvlmError(f"{recipe.source_file or 'recipe'}: data.train lists no dataset to train on")
    trainable = trainable_components(recipe)
    check_peft_plan(recipe.peft, trainable, zero_stage=zero_stage(recipe.train.deepspeed))  # before any load
    with claim(recipe.output_dir):
        return _run_stage(recipe, trainable, resume=resume, loss_plugins=loss_plugins, extra_samples=extra_samples,
                          held_out=held_out)


def _run_stage(recipe: Recipe, trainable: tuple[str, ...], *, resume: bool, loss_plugins: list[LossPlugin] | None,
               extra_samples: list[Sample] | None, held_out: Collection[str]) -> StageResult:
    out = prepare_output_dir(recipe, resume)
    checkpoint = latest_checkpoint(out.checkpoints) if resume else None
    if checkpoint is not None:  # before minutes of model loading
        check_resumable(checkpoint)
    if is_main_process():
        write_text(out.recipe, recipe.to_yaml())
        data_paths = [spec.path for spec in recipe.data.train if spec.path and Path(spec.path).is_file()]
        write_json(out.provenance, provenance(data_paths, recipe=recipe.source_file, stage=recipe.train.stage,
                                              trust_remote_code=recipe.model.trust_remote_code))
    set_seed(recipe.train.seed)

    model, processor, freeze = prepare_model(recipe, trainable)
    samples, reports = read_samples(recipe.data.train, policy=recipe.data.on_bad_record,
                                    prompt_style=recipe.data.prompt_style, image_check=recipe.data.image_check)
    if held_out:
        kept = [sample for sample in samples if sample.id not in held_out]
        reports.append({"source": "held_out", "excluded": len(samples) - len(kept)})
        samples = kept
    if extra_samples:  # replayed samples may share ids with the held-out slice: it stays held out
        extra = [sample for sample in extra_samples if sample.id not in held_out]
        reports.append({"source": "extra_samples", "kept": len(extra), "excluded": len(extra_samples) - len(extra)})
        samples = samples + extra
    if not samples:
        raise DataError("the training sources yielded no samples", file=recipe.source_file)
    preparer = preparer_for(model.config, processor, recipe.data.image_aspect_ratio)
    setup = SETUPS.get(recipe.train.stage, supervised_setup)(recipe, model, processor, samples, preparer)
    if is_main_process():
        write_json(out.data_report, {"sources": reports, "encoding": setup.report})
    log.info("%s", freeze.describe())

    args = training_arguments(recipe, out, find_unused=not all(setup.dataset.has_image),
                              count_tokens=setup.counts_tokens)
    trainer = MedvlmTrainer(
        model=setup.train_model, args=args, train_dataset=setup.dataset, data_collator=setup.collator,
        processing_class=processor, callbacks=training_callbacks(recipe, out),
        projector_lr=recipe.train.projector_lr, loss_plugins=loss_plugins or [],
        group_by_modality_length=recipe.data.group_by_modality_length)
    if resume:
        log.info("resuming from %s", checkpoint or "the start (no checkpoint found)")
    started = time.perf_counter()
    try:
        result = trainer.train(resume_from_checkpoint=checkpoint)
    except pickle.UnpicklingError:
        if checkpoint is None:
            raise
        bad = unloadable_checkpoint_file(checkpoint)
        raise ModelError(f"{bad or checkpoint}: not plain tensors (torch's weights-only loader refused it; nothing "
                         "in it was run); delete this checkpoint and resume from an earlier one, or start "
                         "again without --resume") from None
    wall = time.perf_counter() - started
    samples_used, tokens_used = len(setup.dataset), setup.dataset.num_tokens()
    is_main = trainer.is_world_process_zero()
    adapters = recipe.peft.method != "none"
    setup.save(trainer, processor, recipe, out, adapter=adapters)
    forget_deepspeed_config()
    if adapters:
        del trainer, setup, model  # free the training model before loading the base to merge into
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if is_main:
            finish_adapter_run(recipe, processor, out)
    barrier()  # the next stage (any process) may read out/model only once it is complete
    summary = {
        "stage": recipe.train.stage, "global_step": result.global_step, "train_loss": result.training_loss,
        "wall_seconds": round(wall, 2), "samples": samples_used, "tokens": tokens_used,
        "trainable": freeze.trainable, "metrics": result.metrics,
    }
    if is_main:
        write_json(out.summary, summary)
    return StageResult(out.root, out.model, summary)
