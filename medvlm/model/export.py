"""Turn a run, a checkpoint or an adapter into a model plain transformers loads.

Sources ``medvlm export`` (and evaluation) accept:

* a stage output directory (``recipe.resolved.yaml`` inside): its ``adapter/`` for LoRA runs, else
  its final ``model/``;
* a Trainer checkpoint ``RUN/checkpoints/checkpoint-N`` — a full model, or an adapter checkpoint
  (adapter + fully trained projector, see :mod:`medvlm.model.adapters`);
* an adapter directory whose ``adapter_config.json`` names its base model directory;
* a Hugging Face llava directory.

An adapter is merged into the base it was trained on. For QLoRA that base is the *dequantised*
quantised model, so the merged model computes what the trained model computed (≤ 1e-4), not the
full-precision base plus an adapter that was fitted to a different set of weights.

Exports are written to a staging directory and moved into place, so ``DST`` is never half written.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import ProcessorMixin

from medvlm.errors import ModelError
from medvlm.io import replace_dir, write_json
from medvlm.model.adapters import (
    ADAPTER_CONFIG,
    DORA_NATIVE_LOADING,
    adapter_base,
    adapter_settings,
    is_adapter_dir,
    merge_adapter,
)
from medvlm.model.build import DTYPES, has_processor, load_model, load_pretrained, saved_processor
from medvlm.model.families import ModelFamily, family_of, family_of_dir
from medvlm.recipe import Recipe, validate

RESOLVED_RECIPE = "recipe.resolved.yaml"
ADAPTER_FILES = (ADAPTER_CONFIG, "adapter_model.safetensors")

log = logging.getLogger("medvlm")


@dataclass
class Source:
    """Where the weights are and what produced them."""

    path: Path  # a llava directory (full) or an adapter directory
    is_adapter: bool
    recipe: Recipe | None  # the run's recipe, when the source belongs to a medvlm run


def read_run_recipe(run_dir: str | Path) -> Recipe:
    path = Path(run_dir) / RESOLVED_RECIPE
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ModelError(f"{path}: cannot read the run's recipe: {exc}") from None
    return validate(tree, str(path))


def _run_dir_of(path: Path) -> Path | None:
    """The stage directory a path lies in (itself, or RUN for RUN/adapter and RUN/checkpoints/X)."""
    for candidate in (path, path.parent, path.parent.parent):
        if (candidate / RESOLVED_RECIPE).is_file():
            return candidate
    return None


def resolve_source(path: str | Path) -> Source:
    path = Path(path)
    if not path.is_dir():
        raise ModelError(f"{path}: not a directory (expected a run, a checkpoint, an adapter or a model)")
    run_dir = _run_dir_of(path)
    recipe = read_run_recipe(run_dir) if run_dir is not None else None
    if run_dir == path:  # a stage output directory
        if is_adapter_dir(path / "adapter"):
            return Source(path / "adapter", True, recipe)
        if (path / "model" / "config.json").is_file():
            return Source(path / "model", False, recipe)
        raise ModelError(f"{path}: this run has no final model/ or adapter/ (it did not finish); "
                         f"export one of its checkpoints instead: {path}/checkpoints/checkpoint-N")
    if is_adapter_dir(path):
        return Source(path, True, recipe)
    if (path / "config.json").is_file():
        return Source(path, False, recipe)
    raise ModelError(f"{path}: holds neither a model (config.json) nor an adapter ({ADAPTER_CONFIG})")


def chat_template(recipe: Recipe | None, family: ModelFamily, processor: ProcessorMixin) -> str | None:
    """The chat template of the run's conversation template, with the family's image placeholder."""
    if recipe is None:
        return None
    return family.chat_template(recipe.data.template, processor)


def run_base_model(recipe: Recipe) -> tuple[torch.nn.Module, ProcessorMixin]:
    """The plain base model a run's adapter was trained on (dequantised for QLoRA runs)."""
    from medvlm.model.quant import dequantized, quantization_config

    quantization = quantization_config(recipe.peft, DTYPES[recipe.model.dtype])
    model, processor = load_model(recipe.model, template=recipe.data.template, quantization=quantization)
    if quantization is not None:
        model = dequantized(model, DTYPES[recipe.model.dtype])
    return model, processor


def load_source(source: Source, dtype: str | None = None) -> tuple[torch.nn.Module, ProcessorMixin]:
    """A plain transformers model of its family (adapters merged) and its processor.

    ``dtype`` overrides the stored weights' dtype (None keeps the default float32 load of a
    directory and the run's own dtype for an adapter merged into its base).
    """
    if not source.is_adapter or source.recipe is None:  # a standalone adapter directory names its base
        return load_pretrained(source.path, dtype=dtype or "float32")
    base, processor = run_base_model(source.recipe)
    model = merge_adapter(base, source.path)
    if dtype is not None:
        model = model.to(DTYPES[dtype])
    return model, saved_processor(source.path, processor, model.config)


def load_for_inference(path: str | Path, dtype: str | None = None) -> tuple[torch.nn.Module, ProcessorMixin]:
    """Model and processor from any source :func:`resolve_source` accepts (evaluation's entry point)."""
    model, processor = load_source(resolve_source(path), dtype)
    model.eval()
    return model, processor


def save_llava_dir(model: torch.nn.Module, processor: ProcessorMixin, dst: str | Path,
                   template: str | None = None, records: dict[str, Any] | None = None) -> Path:
    """Write model, processor and chat template to ``dst`` through a staging directory.

    ``records`` are JSON files (name → content) written beside the weights, inside the same atomic
    replace (a consolidated model carries its ``consolidation.json``).
    """
    dst = Path(dst)
    staging = dst.with_name(f".{dst.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    if template is not None:
        processor.chat_template = template
    processor.save_pretrained(staging)
    for name, content in (records or {}).items():
        write_json(staging / name, content)
    replace_dir(staging, dst)
    return dst


def export_adapter(source: Source, dst: str | Path, base_dir: str | Path | None = None) -> Path:
    """Copy an adapter with its processor; its config names an existing base llava directory."""
    recipe = source.recipe
    base = base_dir or (recipe.model.path if recipe is not None else adapter_base(source.path))
    if not base:
        preset = recipe.model.preset if recipe is not None else None
        raise ModelError(f"{source.path}: the adapter's base is the tiny preset '{preset}', which has no model "
                         "directory to point at; export with --merge-lora")
    if adapter_settings(source.path).get("use_dora"):
        raise ModelError(f"{source.path}: {DORA_NATIVE_LOADING}; export it with --merge-lora")
    base = Path(base).resolve()
    if not (base / "config.json").is_file():
        raise ModelError(f"{base}: the adapter's base model directory is missing")
    if recipe is not None and recipe.peft.method == "qlora":
        raise ModelError(f"{source.path}: a QLoRA adapter was trained on quantised weights; export it with "
                         "--merge-lora, which merges it into the dequantised base it was fitted to")
    dst = Path(dst)
    staging = dst.with_name(f".{dst.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in ADAPTER_FILES:
        shutil.copy2(source.path / name, staging / name)
    config = json.loads((staging / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = str(base)
    (staging / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2), encoding="utf-8")
    family = family_of_dir(base)
    processor = family.load_processor(source.path if has_processor(source.path) else base)
    template = chat_template(recipe, family, processor)
    if template is not None:
        processor.chat_template = template
    processor.save_pretrained(staging)
    replace_dir(staging, dst)
    return dst


def export_model(source_path: str | Path, dst: str | Path, *, merge_lora: bool = False) -> Path:
    """``medvlm export``: a Hugging Face llava directory (or adapter directory) at ``dst``."""
    source = resolve_source(source_path)
    dst = Path(dst)
    if dst.resolve() == source.path.resolve():
        raise ModelError(f"{dst}: the export destination is the source itself")
    if source.is_adapter and not merge_lora:
        return export_adapter(source, dst)
    model, processor = load_source(source)
    return save_llava_dir(model, processor, dst, chat_template(source.recipe, family_of(model.config), processor))
