"""Run one training stage from a recipe.

Output directory layout (every file written atomically)::

    DIR/recipe.resolved.yaml   the recipe after bases, overrides and variables
    DIR/provenance.json        package version, git commit, data checksums
    DIR/data_report.json       what each source read, kept, skipped; truncated and rejected samples
    DIR/checkpoints/           Trainer checkpoints (model or adapter, optimizer, RNG, state)
    DIR/logs/train.jsonl       loss, learning rate, grad norm, tokens/s per logging step
    DIR/adapter/               LoRA/DoRA/QLoRA runs: the adapter with the fully trained projector
    DIR/model/                 the final model in Hugging Face llava format (adapters merged; with
                               peft.merge_at_end=false the adapter, naming its base directory)
    DIR/base/                  only for merge_at_end=false on a tiny preset: the base the adapter names
    DIR/train_summary.json     steps, final loss, wall time, throughput

``DIR/model`` appears only when training finished, so its presence means "stage complete".
"""

from __future__ import annotations

import gc
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import TrainingArguments, set_seed

from medvlm.data.collate import SupervisedDataset
from medvlm.data.images import ImagePreparer, PixelCache, check_images, drop_bad_images
from medvlm.data.prompts import apply_prompt_style
from medvlm.data.records import Sample
from medvlm.data.sources import read_source
from medvlm.data.templates import get_template
from medvlm.distributed import barrier, forget_deepspeed_config, zero_stage
from medvlm.errors import DataError, MedvlmError
from medvlm.io import replace_dir, write_json, write_text
from medvlm.model.adapters import apply_lora, check_peft_plan, merge_adapter, set_base_reference
from medvlm.model.build import (
    DTYPES,
    STAGE_TRAINABLE,
    apply_freeze_plan,
    chat_template_for,
    collator_for,
    encoder_for,
    load_model,
    preparer_for,
    summarize,
)
from medvlm.model.export import Source, export_adapter, run_base_model, save_llava_dir
from medvlm.model.quant import quantization_config
from medvlm.provenance import provenance
from medvlm.recipe import Recipe, SourceSpec
from medvlm.train.callbacks import JsonlLogger
from medvlm.train.trainer import LossPlugin, MedvlmTrainer, latest_checkpoint

log = logging.getLogger("medvlm")


@dataclass
class StageResult:
    output_dir: Path
    model_dir: Path
    summary: dict[str, Any]


def read_samples(specs: list[SourceSpec], policy: str, prompt_style: str = "plain", image_check: str = "header",
                 ) -> tuple[list[Sample], list[dict[str, Any]]]:
    """All samples the specs name, in order, with one read report per source.

    Missing, unreadable or root-escaping images are reported like bad records (``image_check``).
    """
    samples: list[Sample] = []
    reports: list[dict[str, Any]] = []
    for spec in specs:
        found, report = read_source(spec.dataset, spec.path, spec.split, policy=policy,  # type: ignore[arg-type]
                                    limit=spec.limit, image_root=spec.image_root, **spec.options)
        images = check_images(found, image_check)  # type: ignore[arg-type]
        found = drop_bad_images(found, images, report, file=spec.path)
        report.kept = len(found)
        reports.append({**report.summary(), "path": spec.path, "split": spec.split, "images": images.summary(),
                        "problems": [str(p) for p in report.problems[:50]]})
        styled = [apply_prompt_style(sample, prompt_style) for sample in found]
        samples.extend(styled * spec.repeat)
    return samples, reports


def trainable_components(recipe: Recipe) -> tuple[str, ...]:
    return tuple(recipe.train.trainable) if recipe.train.trainable else STAGE_TRAINABLE[recipe.train.stage]


def claim_output_dir(out: Path, recipe: Recipe, what: str) -> None:
    """Make ``out`` this recipe's before a pipeline or continual run reuses anything in it.

    Those runs skip finished stages and tasks, which is only right when the finished work came from
    the same resolved recipe: otherwise a rerun with another method would silently report the
    earlier run's results under the new name. A different recipe is refused, or with
    ``output.overwrite`` the directory is cleared.
    """
    text = recipe.to_yaml()
    stored = out / "recipe.resolved.yaml"
    if stored.is_file() and stored.read_text(encoding="utf-8") != text:
        if not recipe.output.overwrite:
            raise MedvlmError(f"{out}: holds a {what} of a different recipe ({stored} differs); choose another "
                              "output.dir, or set output.overwrite=true to replace it")
        log.info("%s: replacing the %s of a different recipe (output.overwrite)", out, what)
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(stored, text)


def prepare_output_dir(recipe: Recipe, resume: bool) -> Path:
    out = recipe.output_dir
    if out.exists() and recipe.output.overwrite and not resume:
        shutil.rmtree(out)
    if (out / "model").exists() and not resume:
        raise MedvlmError(f"{out}: this stage already finished (model/ exists); choose another output.dir "
                          "or set output.overwrite=true")
    if latest_checkpoint(out / "checkpoints") and not resume:
        raise MedvlmError(f"{out}: holds checkpoints of an interrupted run; pass --resume to continue it "
                          "or set output.overwrite=true to start again")
    out.mkdir(parents=True, exist_ok=True)
    return out


def training_arguments(recipe: Recipe, out: Path, find_unused: bool, count_tokens: bool = True) -> TrainingArguments:
    spec = recipe.train
    return TrainingArguments(
        output_dir=str(out / "checkpoints"),
        per_device_train_batch_size=spec.per_device_batch_size,
        gradient_accumulation_steps=spec.gradient_accumulation_steps,
        learning_rate=spec.learning_rate, num_train_epochs=spec.epochs, max_steps=spec.max_steps,
        warmup_steps=spec.warmup_ratio, weight_decay=spec.weight_decay, lr_scheduler_type=spec.lr_scheduler,
        max_grad_norm=spec.max_grad_norm, seed=spec.seed, data_seed=spec.seed,
        bf16=spec.bf16, fp16=spec.fp16, logging_steps=spec.logging_steps, logging_first_step=True,
        save_strategy="steps", save_steps=spec.save_steps, save_total_limit=spec.save_total_limit,
        report_to="none", remove_unused_columns=False, dataloader_num_workers=spec.dataloader_num_workers,
        activation_checkpointing=spec.gradient_checkpointing,  # transformers 5.x name for it
        activation_checkpointing_kwargs={"use_reentrant": False} if spec.gradient_checkpointing else None,
        deepspeed=spec.deepspeed, include_num_input_tokens_seen="non_padding" if count_tokens else "no",
        ddp_find_unused_parameters=find_unused, disable_tqdm=False,
        # without use_cpu the Trainer does not run DDP (gloo) on a CPU-only machine under torchrun
        use_cpu=not torch.cuda.is_available(), dataloader_pin_memory=torch.cuda.is_available())


def _callbacks(recipe: Recipe, out: Path) -> list:
    callbacks: list = [JsonlLogger(out / "logs" / "train.jsonl")]
    if recipe.train.tensorboard:
        try:
            from torch.utils.tensorboard import SummaryWriter
            from transformers.integrations import TensorBoardCallback
        except ImportError:  # tensorboard is an optional extra
            return callbacks
        callbacks.append(TensorBoardCallback(SummaryWriter(log_dir=str(out / "logs" / "tensorboard"))))
    return callbacks


def save_trained(trainer: MedvlmTrainer, processor, template: str, out: Path, adapter: bool) -> Path:
    """Save what the Trainer trained: ``out/model`` (full model) or ``out/adapter`` (adapter + projector).

    ``Trainer.save_model`` gathers ZeRO-3 shards (a collective: every process calls this) and writes
    on the main process only; the directory appears complete or not at all.
    """
    final = out / ("adapter" if adapter else "model")
    staging = out / f".{final.name}-staging"
    if trainer.is_world_process_zero():
        shutil.rmtree(staging, ignore_errors=True)
    trainer.save_model(str(staging))
    if trainer.is_world_process_zero():
        (staging / "training_args.bin").unlink(missing_ok=True)
        processor.chat_template = chat_template_for(trainer.model.config, processor, template)
        processor.save_pretrained(staging)
        replace_dir(staging, final)
    return final


def finish_adapter_run(recipe: Recipe, processor, out: Path) -> Path:
    """``out/model`` of an adapter run: the merged model, or (merge_at_end=false) the adapter itself."""
    if recipe.peft.merge_at_end:
        base, _ = run_base_model(recipe)
        template = chat_template_for(base.config, processor, recipe.data.template)
        return save_llava_dir(merge_adapter(base, out / "adapter"), processor, out / "model", template)
    base_dir = recipe.model.path
    if base_dir is None:  # a tiny preset: give the adapter a base directory to name
        base, _ = load_model(recipe.model, template=recipe.data.template)
        base_dir = save_llava_dir(base, processor, out / "base",
                                  chat_template_for(base.config, processor, recipe.data.template))
    return export_adapter(Source(out / "adapter", True, recipe), out / "model", base_dir=base_dir)


def save_final_model(model: torch.nn.Module, processor, template: str, out: Path) -> Path:
    """Write a plain in-memory model (the contrastive stage's tower) to ``out/model``."""
    return save_llava_dir(model, processor, out / "model", chat_template_for(model.config, processor, template))


@dataclass
class TrainingSetup:
    """What the Trainer trains on: the module it optimises, the dataset and its collator."""

    train_model: torch.nn.Module
    dataset: Any
    collator: Any
    report: dict[str, Any]


def _supervised_setup(recipe: Recipe, model, processor, samples: list[Sample],
                      preparer: ImagePreparer) -> TrainingSetup:
    encoder = encoder_for(model.config, processor, get_template(recipe.data.template), recipe.data.max_length,
                          recipe.data.system_prompt)
    dataset = SupervisedDataset(samples, encoder, preparer, PixelCache(recipe.data.image_cache_mb << 20))
    if not len(dataset):
        raise DataError(f"every sample was rejected as too long for max_length {recipe.data.max_length}",
                        file=recipe.source_file)
    log.info("data: %d samples (%d truncated, %d rejected as too long)", len(dataset),
             dataset.report.truncated, len(dataset.report.rejected))
    return TrainingSetup(model, dataset, collator_for(model.config, processor), dataset.report.summary())


def _contrastive_setup(recipe: Recipe, model, processor, samples: list[Sample],
                       preparer: ImagePreparer) -> TrainingSetup:
    from medvlm.train.contrastive import CaptionPairs, ContrastiveVisionModel, collate_pairs

    pairs = CaptionPairs(samples, processor.tokenizer, preparer, PixelCache(recipe.data.image_cache_mb << 20))
    log.info("data: %d image-caption pairs", len(pairs))
    return TrainingSetup(ContrastiveVisionModel(model, len(processor.tokenizer), pairs.images(0)), pairs,
                         collate_pairs, {"total": len(samples), "kept": len(pairs)})


def run_stage(recipe: Recipe, *, resume: bool = False, loss_plugins: list[LossPlugin] | None = None,
              extra_samples: list[Sample] | None = None) -> StageResult:
    """Train one stage as the recipe says; returns where the final model is.

    ``extra_samples`` join the recipe's training data (continual learning: replayed samples of
    earlier tasks, UIR's unlabeled inquiries); they are counted in ``data_report.json``.
    """
    if not recipe.data.train:
        raise MedvlmError(f"{recipe.source_file or 'recipe'}: data.train lists no dataset to train on")
    trainable = trainable_components(recipe)
    check_peft_plan(recipe.peft, trainable, zero_stage=zero_stage(recipe.train.deepspeed))  # before any load
    out = prepare_output_dir(recipe, resume)
    write_text(out / "recipe.resolved.yaml", recipe.to_yaml())
    data_paths = [spec.path for spec in recipe.data.train if spec.path and Path(spec.path).is_file()]
    write_json(out / "provenance.json", provenance(data_paths, recipe=recipe.source_file, stage=recipe.train.stage))
    set_seed(recipe.train.seed)

    quantization = quantization_config(recipe.peft, DTYPES[recipe.model.dtype])
    model, processor = load_model(recipe.model, template=recipe.data.template, quantization=quantization)
    samples, reports = read_samples(recipe.data.train, recipe.data.on_bad_record, recipe.data.prompt_style,
                                    recipe.data.image_check)
    if extra_samples:
        reports.append({"source": "extra_samples", "kept": len(extra_samples)})
        samples = samples + list(extra_samples)
    if not samples:
        raise DataError("the training sources yielded no samples", file=recipe.source_file)
    preparer = preparer_for(model.config, processor, recipe.data.image_aspect_ratio)
    adapters = recipe.peft.method != "none"
    freeze = apply_freeze_plan(model, () if adapters else trainable)  # peft decides what its model trains
    setup = _contrastive_setup(recipe, model, processor, samples, preparer) \
        if recipe.train.stage == "contrastive" else _supervised_setup(recipe, model, processor, samples, preparer)
    write_json(out / "data_report.json", {"sources": reports, "encoding": setup.report})
    if adapters:
        setup.train_model = model = apply_lora(model, recipe.peft, trainable,
                                               gradient_checkpointing=recipe.train.gradient_checkpointing)
        set_base_reference(model, Path(recipe.model.path).resolve() if recipe.model.path else None)
        freeze = summarize(model)
    log.info("%s", freeze.describe())
    if recipe.train.gradient_checkpointing:
        model.enable_input_require_grads()

    args = training_arguments(recipe, out, find_unused=not all(setup.dataset.has_image),
                              count_tokens=recipe.train.stage != "contrastive")
    trainer = MedvlmTrainer(
        model=setup.train_model, args=args, train_dataset=setup.dataset, data_collator=setup.collator,
        processing_class=processor, callbacks=_callbacks(recipe, out), projector_lr=recipe.train.projector_lr,
        loss_plugins=loss_plugins or [], group_by_modality_length=recipe.data.group_by_modality_length)
    checkpoint = latest_checkpoint(out / "checkpoints") if resume else None
    if resume:
        log.info("resuming from %s", checkpoint or "the start (no checkpoint found)")
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=checkpoint)
    wall = time.perf_counter() - started
    samples_used, tokens_used = len(setup.dataset), setup.dataset.num_tokens()
    is_main = trainer.is_world_process_zero()
    if recipe.train.stage == "contrastive":
        if is_main:
            save_final_model(model, processor, recipe.data.template, out)
    else:
        save_trained(trainer, processor, recipe.data.template, out, adapter=adapters)
    forget_deepspeed_config()
    if adapters:
        del trainer, setup, model  # free the training model before loading the base to merge into
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if is_main:
            finish_adapter_run(recipe, processor, out)
    barrier()  # the next stage (any process) may read out/model only once it is complete
    model_dir = out / "model"
    summary = {
        "stage": recipe.train.stage, "global_step": result.global_step, "train_loss": result.training_loss,
        "wall_seconds": round(wall, 2), "samples": samples_used, "tokens": tokens_used,
        "trainable": freeze.trainable, "metrics": result.metrics,
    }
    if is_main:
        write_json(out / "train_summary.json", summary)
    return StageResult(out, model_dir, summary)
