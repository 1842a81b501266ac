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
``DST`` is replaced only when it is new, empty or an earlier export (``overwrite`` for a directory of
other files); the source, its run directory and their ancestors never are (:func:`medvlm.io.replace_dir`).
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

from medvlm.errors import ModelError, first_line
from medvlm.io import check_replaceable, replace_dir, unique_staging, write_json
from medvlm.model.adapters import (
    ADAPTER_CONFIG,
    DORA_NATIVE_LOADING,
    adapter_base,
    adapter_settings,
    is_adapter_dir,
    merge_adapter,
)
from medvlm.model.build import DTYPES, has_processor, load_model, load_pretrained, saved_processor
from medvlm.model.families import family_of, family_of_dir, resolve_family
from medvlm.model.prompting import TrainedPrompt, read_trained_prompt
from medvlm.recipe import Recipe, validate
from medvlm.rundir import StageDir, run_dir_of

ADAPTER_FILES = (ADAPTER_CONFIG, "adapter_model.safetensors")

log = logging.getLogger("medvlm")


@dataclass
class Source:
    """Where the weights are and what produced them."""

    path: Path  # a llava directory (full) or an adapter directory
    is_adapter: bool
    recipe: Recipe | None  # the run's recipe, when the source belongs to a medvlm run


def read_run_recipe(run_dir: str | Path) -> Recipe:
    """The recipe a run stored, with ``model.trust_remote_code`` off.

    A stored file is data, not the user's choice: a copied run directory must not make medvlm run
    its model directory's code (a model needing it then fails with an error saying so).
    """
    path = StageDir(Path(run_dir)).recipe
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: cannot read the run's recipe: {first_line(exc)}") from None
    recipe = validate(tree, str(path))
    if recipe.model.trust_remote_code:
        log.warning("%s: ignoring model.trust_remote_code from the run's stored recipe (only your own recipe "
                    "can switch it on)", path)
        recipe.model.trust_remote_code = False
    return recipe


def resolve_source(path: str | Path) -> Source:
    path = Path(path)
    if not path.is_dir():
        raise ModelError(f"{path}: not a directory (expected a run, a checkpoint, an adapter or a model)")
    run_dir = run_dir_of(path)
    recipe = read_run_recipe(run_dir) if run_dir is not None else None
    if run_dir == path:  # a stage output directory
        stage = StageDir(path)
        if is_adapter_dir(stage.adapter):
            return Source(stage.adapter, True, recipe)
        if (stage.model / "config.json").is_file():
            return Source(stage.model, False, recipe)
        raise ModelError(f"{path}: this run has no final model/ or adapter/ (it did not finish); "
                         f"export one of its checkpoints instead: {path}/checkpoints/checkpoint-N")
    if is_adapter_dir(path):
        return Source(path, True, recipe)
    if (path / "config.json").is_file():
        return Source(path, False, recipe)
    raise ModelError(f"{path}: holds neither a model (config.json) nor an adapter ({ADAPTER_CONFIG})")


def trained_prompt(source: Source) -> TrainedPrompt | None:
    """The prompt the source was trained with: its run's recipe, else the record in its directory."""
    if source.recipe is not None:
        return TrainedPrompt.of(source.recipe.data)
    return read_trained_prompt(source.path)


def model_prompt(path: str | Path) -> TrainedPrompt | None:
    """The prompt the model at ``path`` (any source :func:`resolve_source` accepts) was trained with."""
    return trained_prompt(resolve_source(path))


def prompt_settings(path: str | Path, template: str | None, system_prompt: str | None) -> tuple[str, str | None]:
    """Template and system prompt for prompting the model at ``path`` (predict, chat, serve alike): what
    the caller asks for, else what the model was trained with, else its family's own template. The
    trained system prompt goes with the trained template only."""
    source = resolve_source(path)
    trained = trained_prompt(source)
    if trained is None:
        if template is None:
            if not source.is_adapter:
                family = family_of_dir(source.path, "auto")
            else:  # an adapter's family is its base model's
                model = source.recipe.model if source.recipe is not None else None
                family = resolve_family(model.family if model else "auto", model.path if model else None)
            template = family.default_template
        return template, system_prompt
    if template is None or template == trained.template:
        return trained.template, trained.system_prompt if system_prompt is None else system_prompt
    return template, system_prompt


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
                   prompt: TrainedPrompt | None = None, records: dict[str, Any] | None = None, *,
                   overwrite: bool = False, protect: tuple[str | Path, ...] = ()) -> Path:
    """Write model, processor and the prompt it was trained with to ``dst`` through a staging directory.

    ``prompt`` sets the chat template and is recorded as ``prompt.json`` (see
    :mod:`medvlm.model.prompting`). ``records`` are JSON files (name → content) written beside the
    weights, inside the same atomic replace (a consolidated model carries its ``consolidation.json``).
    ``overwrite`` and ``protect``: see :func:`medvlm.io.check_replaceable` (checked before anything
    is written).
    """
    dst = Path(dst)
    check_replaceable(dst, overwrite=overwrite, protect=protect)
    staging = unique_staging(dst)
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    if prompt is not None:
        prompt.apply(processor, family_of(model.config))
        prompt.write(staging)
    processor.save_pretrained(staging)
    for name, content in (records or {}).items():
        write_json(staging / name, content)
    replace_dir(staging, dst, overwrite=overwrite, protect=protect)
    return dst


def export_adapter(source: Source, dst: str | Path, base_dir: str | Path | None = None, *,
                   overwrite: bool = False, protect: tuple[str | Path, ...] = ()) -> Path:
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
    protect = (*protect, base)
    check_replaceable(dst, overwrite=overwrite, protect=protect)
    staging = unique_staging(dst)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in ADAPTER_FILES:
        shutil.copy2(source.path / name, staging / name)
    config = json.loads((staging / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = str(base)
    (staging / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2), encoding="utf-8")
    family = family_of_dir(base)
    processor = family.load_processor(source.path if has_processor(source.path) else base)
    prompt = trained_prompt(source)
    if prompt is not None:
        prompt.apply(processor, family)
        prompt.write(staging)
    processor.save_pretrained(staging)
    replace_dir(staging, dst, overwrite=overwrite, protect=protect)
    return dst


def export_model(source_path: str | Path, dst: str | Path, *, merge_lora: bool = False,
                 overwrite: bool = False) -> Path:
    """``medvlm export``: a Hugging Face llava directory (or adapter directory) at ``dst``.

    ``dst`` must not be (or contain) the source or its run directory; a directory of other files is
    replaced only with ``overwrite``. Checked before any weights load.
    """
    source = resolve_source(source_path)
    dst = Path(dst)
    run_dir = run_dir_of(Path(source_path))
    protect = (source.path, Path(source_path), *((run_dir,) if run_dir is not None else ()))
    check_replaceable(dst, overwrite=overwrite, protect=protect)
    if source.is_adapter and not merge_lora:
        return export_adapter(source, dst, overwrite=overwrite, protect=protect)
    model, processor = load_source(source)
    return save_llava_dir(model, processor, dst, trained_prompt(source), overwrite=overwrite, protect=protect)
