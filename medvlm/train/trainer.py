"""The transformers ``Trainer``, extended (not replaced) for LLaVA-style training.

What it adds:

* a separate projector learning rate (LLaVA-1.5 LoRA recipes train the projector at 2e-5 while
  the adapters get 2e-4); the projector's parameters are the model family's;
* LLaVA's modality- and length-grouped batching;
* loss plugins — continual-learning terms such as UIR, LwF or EWC — added to the language-model
  loss with the same gradient-accumulation scaling, and logged under their own names (plugins see
  ``outputs=None`` on a batch without any supervised token, whose forward pass is skipped);
* checkpoints written atomically: a checkpoint is assembled in a staging directory and renamed
  into place, so a run killed mid-save never leaves a half checkpoint for ``--resume`` to trip on;
* resume that really restores the weights: transformers 5 saves llava checkpoints under the legacy
  key layout and its resume path loads them with ``strict=False`` — matching nothing, silently
  restarting from the initial weights. medvlm restores through ``from_pretrained`` (which converts
  the keys) and copies with ``strict=True``.

Everything else — accumulation, resume, schedulers, DeepSpeed, FSDP, progress bars — is the
Trainer's own.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from transformers import PreTrainedModel, Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME

from medvlm.data.collate import IGNORE_INDEX, ModalityLengthGroupedSampler
from medvlm.errors import DataError, ModelError, first_line
from medvlm.io import read_json, run_token
from medvlm.model.families import family_of_model


@runtime_checkable
class LossPlugin(Protocol):
    """An extra loss term: ``(model, inputs, outputs) -> tensor`` or None to add nothing.

    ``name`` labels the term in logs. Plugins that need a teacher or data of their own build them in
    their constructor; ``setup(trainer)`` (optional) runs once before training starts.
    """

    name: str

    def __call__(self, model: torch.nn.Module, inputs: dict[str, Any], outputs: Any) -> torch.Tensor | None: ...


class MedvlmTrainer(Trainer):
    def __init__(self, *args: Any, projector_lr: float | None = None,
                 loss_plugins: list[LossPlugin] | tuple[LossPlugin, ...] = (),
                 group_by_modality_length: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.projector_lr = projector_lr
        self.loss_plugins = list(loss_plugins)
        self.group_by_modality_length = group_by_modality_length
        self._plugin_totals: dict[str, float] = {}
        self._plugin_counts: dict[str, int] = {}
        self._staging_dir: str | None = None
        for plugin in self.loss_plugins:
            if hasattr(plugin, "setup"):
                plugin.setup(self)

    # -- optimiser --------------------------------------------------------------------------------
    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        """Four parameter groups: (projector or not) × (weight decay or not)."""
        if self.optimizer is not None or self.projector_lr is None:
            return super().create_optimizer(model) if self.optimizer is None else self.optimizer
        model = model if model is not None else self.model
        decay = set(self.get_decay_parameter_names(model))
        family = family_of_model(model)  # None for a wrapper without a config (contrastive stage)
        groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
        for name, param in model.named_parameters():
            if param.requires_grad:
                is_projector = family is not None and family.component_of(name) == "projector"
                groups.setdefault((is_projector, name in decay), []).append(param)
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
        param_groups = [
            {"params": params, "weight_decay": self.args.weight_decay if has_decay else 0.0,
             **({"lr": self.projector_lr} if is_projector else {})}
            for (is_projector, has_decay), params in sorted(groups.items())
        ]
        self.optimizer = optimizer_cls(param_groups, **optimizer_kwargs)
        return self.optimizer

    # -- data order -------------------------------------------------------------------------------
    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.group_by_modality_length and hasattr(dataset, "lengths") and hasattr(dataset, "has_image"):
            return ModalityLengthGroupedSampler(
                dataset.lengths, dataset.has_image, batch_size=self.args.per_device_train_batch_size,
                seed=self.args.data_seed if self.args.data_seed is not None else self.args.seed,
                megabatch_batches=max(8, self.args.world_size))
        return super()._get_train_sampler(train_dataset)

    # -- loss -------------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.get("labels")
        targetless = labels is not None and not bool((labels != IGNORE_INDEX).any())
        if self.loss_plugins and model.training and targetless:
            # A batch with no target (UIR's unlabeled inquiries) has no language-model loss — its
            # cross-entropy would be 0/0 — so skip that forward pass; only plugin terms apply.
            loss, outputs = torch.zeros((), device=labels.device, requires_grad=True), None
        else:
            loss, outputs = super().compute_loss(model, inputs, return_outputs=True,
                                                 num_items_in_batch=num_items_in_batch)
        if self.loss_plugins and model.training:
            # The LM loss may already be normalised over the whole accumulated batch; per-batch
            # plugin means must then be divided by the accumulation steps to weigh the same.
            scaled_for_ga = (self.model_accepts_loss_kwargs and num_items_in_batch is not None) \
                or self.compute_loss_func is not None
            factor = 1.0 / self.current_gradient_accumulation_steps if scaled_for_ga else 1.0
            for plugin in self.loss_plugins:
                term = plugin(model, inputs, outputs)
                if term is None:
                    continue
                self._plugin_totals[plugin.name] = self._plugin_totals.get(plugin.name, 0.0) + float(term.detach())
                self._plugin_counts[plugin.name] = self._plugin_counts.get(plugin.name, 0) + 1
                loss = loss + term * factor
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        for name, total in self._plugin_totals.items():
            logs[f"loss_{name}"] = round(total / max(1, self._plugin_counts[name]), 6)
        self._plugin_totals.clear()
        self._plugin_counts.clear()
        super().log(logs, start_time)

    # -- checkpoints ------------------------------------------------------------------------------
    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        model = model if model is not None else self.model
        has_full_weights = any(os.path.isfile(os.path.join(resume_from_checkpoint, name))
                               for name in (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME))
        if (isinstance(model, PreTrainedModel) and has_full_weights and not self.is_deepspeed_enabled
                and not self.is_fsdp_enabled):
            restored = type(model).from_pretrained(resume_from_checkpoint, dtype=model.dtype)
            model.load_state_dict(restored.state_dict(), strict=True)
            return
        super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _get_output_dir(self, trial) -> str:
        return self._staging_dir or super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial) -> None:
        run_dir = super()._get_output_dir(trial)
        folder = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staging = os.path.join(run_dir, f".staging-{run_token()}")
        if self.args.should_save:
            shutil.rmtree(staging, ignore_errors=True)  # leftovers of a killed save
            os.makedirs(staging, exist_ok=True)
        self.accelerator.wait_for_everyone()
        self._staging_dir = staging
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging_dir = None
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            final = os.path.join(run_dir, folder)
            if os.path.exists(final):
                shutil.rmtree(final)
            os.replace(os.path.join(staging, folder), final)
            shutil.rmtree(staging, ignore_errors=True)
            _fsync_dir(run_dir)
            from transformers.trainer_utils import rotate_checkpoints

            rotate_checkpoints(output_dir=run_dir, save_total_limit=self.args.save_total_limit,
                               best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=False)
        self.accelerator.wait_for_everyone()


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def unloadable_checkpoint_file(checkpoint: str | Path) -> Path | None:
    """The first training-state file of a checkpoint (RNG, scheduler, scaler, optimizer: the files the
    Trainer loads with ``weights_only``) that torch's weights-only loader refuses.

    Called only after resuming failed with ``UnpicklingError``, to name the file in the error; the
    small files are tried first.
    """
    from transformers.trainer_pt_utils import safe_globals  # the numpy allow-list the Trainer loads RNG states with

    files = sorted(Path(checkpoint).glob("*.pt*"), key=lambda file: (file.name.startswith("optimizer"), file.name))
    with safe_globals():
        return next((file for file in files if _refused_by_weights_only(file)), None)


def _refused_by_weights_only(file: Path) -> bool:
    """Whether torch's weights-only loader refuses ``file`` (an unreadable file is not what failed here)."""
    import pickle

    for mmap in (True, False):  # mmap needs a zip archive, which a hand-made pickle is not
        try:
            torch.load(file, map_location="cpu", weights_only=True, mmap=mmap)
            return False
        except pickle.UnpicklingError:
            return True
        except RuntimeError:
            continue
        except (OSError, EOFError, ValueError):
            return False
    return False


def latest_checkpoint(run_dir: str | Path) -> str | None:
    """The newest complete checkpoint (staging leftovers are never complete checkpoints)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return None
    steps = []
    for child in run_dir.iterdir():
        if child.is_dir() and child.name.startswith(f"{PREFIX_CHECKPOINT_DIR}-"):
            suffix = child.name.rsplit("-", 1)[-1]
            if suffix.isdigit() and (child / "trainer_state.json").is_file():
                steps.append((int(suffix), str(child)))
    return max(steps)[1] if steps else None


def check_resumable(checkpoint: str | Path) -> None:
    """Refuse a checkpoint that transformers would fail to resume from with a traceback: a damaged
    ``trainer_state.json``, or a truncated weights (safetensors) or training-state (torch zip) file.

    Only headers and the zip directory are read (a truncated file loses its end), so this is quick
    even for a 7B model's optimizer state. Pickles torch refuses are named after the fact
    (:func:`unloadable_checkpoint_file`).
    """
    import zipfile

    from safetensors import SafetensorError, safe_open

    checkpoint = Path(checkpoint)
    advice = f"delete {checkpoint} and resume from an earlier checkpoint, or start again without --resume"
    state_file = checkpoint / "trainer_state.json"
    try:  # transformers reads it on resume and ends in a JSONDecodeError traceback on a damaged one
        state = read_json(state_file)
    except DataError as exc:
        raise ModelError(f"{exc}; {advice}") from None
    # ... and in a TypeError deep in its arithmetic on fields of the wrong type
    expected = {"global_step": (int,), "log_history": (list,), "max_steps": (int,), "epoch": (int, float)}
    for key, types in expected.items():
        value = state.get(key) if isinstance(state, dict) else None
        if (key in ("global_step", "log_history") or value is not None) and (
                not isinstance(value, types) or isinstance(value, bool)):
            raise ModelError(f"{state_file}: key '{key}': expected {' or '.join(t.__name__ for t in types)}, got "
                             f"{type(value).__name__}; {advice}")
    for file in sorted(checkpoint.rglob("*")):
        if file.suffix == ".safetensors":
            try:
                with safe_open(file, framework="pt"):
                    pass
            except (SafetensorError, OSError) as exc:
                raise ModelError(f"{file}: not a complete safetensors file ({first_line(exc)}); {advice}") from None
        elif file.suffix in (".pt", ".pth") and _starts_as_zip(file):
            try:
                zipfile.ZipFile(file).close()
            except (zipfile.BadZipFile, OSError):
                raise ModelError(f"{file}: truncated or damaged (its zip directory is unreadable); {advice}") from None


def _starts_as_zip(file: Path) -> bool:
    """torch.save's format; anything else (an old-style pickle) is left to torch's weights-only loader."""
    with open(file, "rb") as handle:
        return handle.read(4) == b"PK\x03\x04"
