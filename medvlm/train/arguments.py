"""The transformers ``TrainingArguments`` and callbacks of one stage, from its recipe."""

from __future__ import annotations

import torch
from transformers import TrainingArguments

from medvlm.recipe import Recipe
from medvlm.rundir import StageDir
from medvlm.train.callbacks import JsonlLogger


def training_arguments(recipe: Recipe, out: StageDir, find_unused: bool, count_tokens: bool = True,
                       ) -> TrainingArguments:
    spec = recipe.train
    return TrainingArguments(
        output_dir=str(out.checkpoints),
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


def training_callbacks(recipe: Recipe, out: StageDir) -> list:
    callbacks: list = [JsonlLogger(out.train_log)]
    if recipe.train.tensorboard:
        try:
            from torch.utils.tensorboard import SummaryWriter
            from transformers.integrations import TensorBoardCallback
        except ImportError:  # tensorboard is an optional extra
            return callbacks
        callbacks.append(TensorBoardCallback(SummaryWriter(log_dir=str(out.tensorboard))))
    return callbacks
