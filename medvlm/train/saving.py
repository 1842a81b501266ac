"""Writing what a stage trained: the full model, or the adapter and then the model built from it."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from medvlm.io import replace_dir, unique_staging
from medvlm.model.adapters import merge_adapter
from medvlm.model.build import load_model
from medvlm.model.export import Source, export_adapter, run_base_model, save_llava_dir
from medvlm.model.families import family_of_model
from medvlm.model.prompting import TrainedPrompt
from medvlm.recipe import Recipe
from medvlm.rundir import StageDir
from medvlm.train.trainer import MedvlmTrainer


def save_trained(trainer: MedvlmTrainer, processor, prompt: TrainedPrompt, out: StageDir, adapter: bool) -> Path:
    """Save what the Trainer trained: ``out/model`` (full model) or ``out/adapter`` (adapter + projector).

    ``Trainer.save_model`` gathers ZeRO-3 shards (a collective: every process calls this) and writes
    on the main process only; the directory appears complete or not at all.
    """
    final = out.adapter if adapter else out.model
    staging = unique_staging(final)
    if trainer.is_world_process_zero():
        shutil.rmtree(staging, ignore_errors=True)
    trainer.save_model(str(staging))
    if trainer.is_world_process_zero():
        (staging / "training_args.bin").unlink(missing_ok=True)
        prompt.apply(processor, family_of_model(trainer.model))
        prompt.write(staging)
        processor.save_pretrained(staging)
        replace_dir(staging, final)
    return final


def finish_adapter_run(recipe: Recipe, processor, out: StageDir) -> Path:
    """``out/model`` of an adapter run: the merged model, or (merge_at_end=false) the adapter itself."""
    prompt = TrainedPrompt.of(recipe.data)
    if recipe.peft.merge_at_end:
        base, _ = run_base_model(recipe)
        return save_llava_dir(merge_adapter(base, out.adapter), processor, out.model, prompt)
    base_dir = recipe.model.path
    if base_dir is None:  # a tiny preset: give the adapter a base directory to name
        base, _ = load_model(recipe.model, template=recipe.data.template)
        base_dir = save_llava_dir(base, processor, out.base, prompt)
    return export_adapter(Source(out.adapter, True, recipe), out.model, base_dir=base_dir)


def save_final_model(model: torch.nn.Module, processor, prompt: TrainedPrompt, out: StageDir) -> Path:
    """Write a plain in-memory model (the contrastive stage's tower, a built initial model) to ``out/model``."""
    return save_llava_dir(model, processor, out.model, prompt)
