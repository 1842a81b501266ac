"""Recipes: YAML files validated into typed, frozen-schema pydantic models.

A recipe says everything a run needs (model, data, training stage, PEFT, continual learning,
evaluation, output). Three conveniences, all resolved before anything runs:

* ``base: ../base/defaults.yaml`` inherits another recipe (path relative to this file; a list merges
  left to right); mappings merge key by key, lists and scalars replace.
* Command-line overrides ``train.learning_rate=1e-4`` set one dotted key; the value is parsed as YAML,
  so ``3``, ``1e-4``, ``true`` and ``[a, b]`` get their natural types.
* ``${output_dir}``, ``${recipe_dir}``, ``${medvlm_resources}`` (the package's shipped files, e.g. the
  general base model) and environment variables (``${MEDVLM_REAL_DATA}``) expand in path-like string
  values.

Unknown keys are rejected with the nearest valid name, wrong types with the dotted key path; the
fully resolved recipe is written into every output directory as ``recipe.resolved.yaml``.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from medvlm.bounds import TreeError, check_tree
from medvlm.errors import RecipeError, shorten
from medvlm.registry import (
    CONSOLIDATORS,
    FAMILIES,
    GUARDS,
    METHOD_SETTINGS,
    PROMPT_STYLES,
    SOURCES,
    TEMPLATES,
    Registry,
)
from medvlm.resources import RESOURCES


def _registered(registry: Registry, *also: str) -> AfterValidator:
    """A field whose value must be a name in ``registry`` or one of ``also`` (an unknown one is reported
    with the nearest)."""

    def check(value: str) -> str:
        if value not in also and value not in registry:
            raise ValueError(registry.unknown(value))
        return value

    return AfterValidator(check)


DatasetName = Annotated[str, _registered(SOURCES)]
TemplateName = Annotated[str, _registered(TEMPLATES)]
PromptStyle = Annotated[str, _registered(PROMPT_STYLES)]
FamilyName = Annotated[str, _registered(FAMILIES, "auto")]
#: What numpy's and torch's generators accept as a seed.
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]

#: Values a recipe file may expand to. Real recipes hold a few hundred; YAML anchors and aliases can
#: make a 1 KB file expand to billions ("billion laughs"), which validation and dumping would walk.
MAX_RECIPE_VALUES = 100_000
TOO_MANY_DIGITS = f"a number with more than {sys.get_int_max_str_digits()} digits; no setting needs one"

# --------------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------------


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


Section = _Section  # the base of a plugin's settings section (see ContinualSpec), extra keys forbidden


class ModelSpec(_Section):
    """Where the model comes from: a local Hugging Face model directory, or a tiny preset."""

    path: str | None = None
    preset: str | None = Field(None, description="tiny preset, e.g. tiny-clip-llama")
    family: FamilyName = Field("auto", description="architecture (medvlm.model.families): auto reads config.json's "
                        "model_type; with a preset, the family built at the preset's sizes (auto: llava)")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"
    trust_remote_code: bool = Field(False, description="run Python code shipped in model.path (warned about, "
                                    "recorded in provenance; never taken from a run's stored recipe)")
    init_seed: Seed = 0
    tokenizer_vocab_size: int = Field(1024, ge=8)

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if self.path is not None and self.preset is not None:
            raise ValueError("give either model.path or model.preset, not both")
        return self


class SourceSpec(_Section):
    """One dataset read through a registered source (see ``medvlm.data.sources``)."""

    dataset: DatasetName
    path: str | None = None
    split: str = "train"
    image_root: str | None = None
    limit: int | None = Field(None, ge=1)
    repeat: int = Field(1, ge=1, description="list the samples this many times (small sets)")
    options: dict[str, Any] = Field(default_factory=dict)


class DataSpec(_Section):
    train: list[SourceSpec] = Field(default_factory=list)
    template: TemplateName = "vicuna_v1"
    system_prompt: str | None = None
    image_aspect_ratio: Literal["pad", "resize", "crop", "native"] = "pad"
    max_length: int = Field(2048, ge=8)
    group_by_modality_length: bool = True
    on_bad_record: Literal["error", "skip"] = "error"
    prompt_style: PromptStyle = "plain"
    image_cache_mb: int = Field(1024, ge=0, description="prepared-pixel cache per data loader process")
    image_check: Literal["none", "exists", "header", "decode"] = Field(
        "header", description="validate every referenced image before training (see medvlm.data.images)")


TrainableName = Literal["vision_tower", "projector", "language_model"]


class TrainSpec(_Section):
    stage: Literal["contrastive", "pretrain", "align", "instruct", "finetune"] = "finetune"
    trainable: list[TrainableName] | None = Field(
        None, description="override the stage's freeze plan")
    learning_rate: float = Field(2e-5, gt=0)
    projector_lr: float | None = Field(None, gt=0)
    epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(-1, description="optimizer steps; -1 (the default) trains for train.epochs instead")
    per_device_batch_size: int = Field(8, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    # < 1: transformers reads warmup_steps >= 1 as a step count
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    lr_scheduler: str = "cosine"
    max_grad_norm: float = Field(1.0, ge=0, description="0: no clipping")
    seed: Seed = 42
    bf16: bool = False
    fp16: bool = False
    gradient_checkpointing: bool = False
    logging_steps: int = Field(10, ge=1)
    save_steps: int = Field(500, ge=1)
    save_total_limit: int | None = Field(2, ge=1, description="checkpoints kept (null: all)")
    deepspeed: str | None = None
    dataloader_num_workers: int = Field(0, ge=0)
    tensorboard: bool = True

    @field_validator("max_steps")
    @classmethod
    def _steps(cls, value: int) -> int:
        if value == 0 or value < -1:  # transformers reads 0 as "one step" and any negative as "use epochs"
            raise ValueError("must be at least 1, or -1 to train for train.epochs")
        return value


class PeftSpec(_Section):
    method: Literal["none", "lora", "dora", "qlora"] = "none"
    r: int = Field(128, ge=1)
    alpha: int = Field(256, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: str | None = Field(
        None, description="regex over full module names; default: the family's language-model attention and MLP "
        "linears (medvlm.model.families.ModelFamily.lora_target_modules)")
    train_projector: bool = True
    bits: Literal[4, 8] = Field(4, description="qlora: 4-bit (quant_type) or 8-bit (LLM.int8) base weights")
    double_quant: bool = True
    quant_type: Literal["nf4", "fp4"] = "nf4"
    dora: bool = Field(False, description="weight-decomposed adapters with lora/qlora (method dora = lora + this)")
    merge_at_end: bool = Field(True, description="OUT/model holds the merged model (else the adapter; "
                               "OUT/adapter is kept either way)")

    @model_validator(mode="after")
    def _dora_needs_adapters(self) -> PeftSpec:
        if self.dora and self.method == "none":
            raise ValueError("peft.dora needs peft.method lora, dora or qlora")
        return self


_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"  # task and probe names become directory names


class TaskGuards(_Section):
    """One task's (or guarded pipeline stage's) departures from the run's continual method."""

    skip: list[str] = Field(default_factory=list,
                           description="method components not applied to this task, e.g. [uir] or [sac]")
    sac: dict[str, Any] = Field(default_factory=dict,
                                description="keys of continual.sac changed for this task, e.g. {ratio: 0.5}")


class ContinualTaskSpec(_Section):
    """One task of a continual sequence: its training data, its evaluation set, stage settings."""

    name: str = Field(pattern=_NAME)
    train: list[SourceSpec] = Field(min_length=1)
    eval: list[SourceSpec] = Field(min_length=1, description="the task's probe set")
    overrides: dict[str, Any] = Field(default_factory=dict,
                                      description="dotted recipe keys for this task, e.g. train.epochs: 2")
    guards: TaskGuards = Field(default_factory=TaskGuards, description="this task's continual settings")


class ProbeSpec(_Section):
    """An extra probe set evaluated after every task, e.g. the general-domain probe."""

    name: str = Field(pattern=_NAME)
    eval: list[SourceSpec] = Field(min_length=1)


DEFAULT_RATIO_GRID = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]


class SacAutoSpec(_Section):
    """How ``sac.ratio: auto`` chooses r per task, as LLaVA-c's scripts do: every r of ``grid`` is
    tried on the trained update and scored on a validation slice held out of the task's training data
    and on a general validation set (never a test split); ``criterion`` picks one.

    * ``floor``: the best validation score among the ratios whose general retention (general
      validation accuracy / that of the initial model) is at least ``retention_floor``; when none
      reaches it, the ratio with the highest retention.
    * ``weighted``: the best validation score + ``weight``·100·retention.

    The validation score is strict accuracy (percent) of greedy answers to the held-out questions
    (``metric: accuracy``, for short-answer data) or minus the mean answer-token loss (``metric:
    loss``, for captions and conversations). Ties go to the larger ratio (the update kept more whole).
    """

    grid: list[Annotated[float, Field(gt=0, le=1)]] = Field(default_factory=lambda: list(DEFAULT_RATIO_GRID),
                                                      min_length=1)
    criterion: Literal["floor", "weighted"] = "floor"
    retention_floor: float = Field(0.9, ge=0)
    weight: float = Field(1.0, ge=0)
    metric: Literal["accuracy", "loss"] = "accuracy"
    validation_samples: int = Field(64, ge=1, description="held out of the task's training data, never trained on")
    general: list[SourceSpec] = Field(default_factory=list, description="general validation set (not a test split)")
    batch_size: int = Field(32, ge=1)
    max_new_tokens: int = Field(8, ge=1)

    @field_validator("general")
    @classmethod
    def _not_test(cls, value: list[SourceSpec]) -> list[SourceSpec]:
        for source in value:
            if "test" in source.split.lower():
                raise ValueError(f"the ratio is chosen on validation data, never on a test split (got split "
                                 f"'{source.split}' for {source.dataset})")
        return value


class SacSpec(_Section):
    ratio: Annotated[float, Field(gt=0, le=1)] | Literal["auto"] = Field(
        0.2, description="r in (0, 1]: the window K is where mean(σ₁..σ_K) ≤ r·σ₁; auto: chosen per task (sac.auto)")
    auto: SacAutoSpec = Field(default_factory=SacAutoSpec)

    @model_validator(mode="after")
    def _auto_needs_general(self) -> SacSpec:
        if self.ratio == "auto" and not self.auto.general:
            raise ValueError("sac.ratio auto needs sac.auto.general: a general validation set (e.g. a held-out "
                             "slice of general data; never a test split) to measure retention on")
        return self


class MixSpec(_Section):
    alpha: float = Field(0.5, ge=0, le=1, description="θ = (1−α)·θ_{t−1} + α·θ̂_t")


class UirSpec(_Section):
    weight: float = Field(1.0, ge=0, description="λ of the hidden-state MSE")
    masked: bool = Field(True, description="mean over real tokens; false: over all positions (research code)")
    inquiries: list[SourceSpec] = Field(default_factory=list, description="text-only instruction sources")
    ratio: float = Field(0.25, gt=0, description="inquiries mixed into a task, per task training sample")
    drop_images: bool = Field(False, description="use the questions of image samples as text-only inquiries")


class LwfSpec(_Section):
    weight: float = Field(0.5, ge=0)
    temperature: float = Field(1.0, gt=0)


class EwcSpec(_Section):
    weight: float = Field(1000.0, ge=0, description="λ of λ/2·Σ F_j (θ_j − θ*_j)²")
    online: bool = Field(True, description="one running Fisher F ← γF + F_new (else one term per task)")
    gamma: float = Field(1.0, ge=0, le=1)
    fisher_samples: int = Field(200, ge=1, description="training samples per task for the Fisher estimate")


class ReplaySpec(_Section):
    buffer_size: int = Field(500, ge=1, description="reservoir over every earlier task's training samples")
    ratio: float = Field(0.2, gt=0, description="replayed samples mixed into a task, per task sample")


class OloraSpec(_Section):
    weight: float = Field(0.5, ge=0, description="λ₁ of Σ|A_i·A_tᵀ| against earlier tasks' LoRA A")
    l2: float = Field(0.0, ge=0, description="λ₂ of the L2 penalty on the new adapter")


class ContinualSpec(_Section):
    """A task sequence, the method guarding it, and the probes measuring forgetting.

    ``method`` joins components with '+': at most one registered consolidator (sac, mix, ...) and any
    registered guards (uir, lwf, ewc, replay, o-lora, ...); ``seq-ft`` (plain sequential finetuning)
    stands alone. Each component reads its own section below. A component added later brings its
    section with it: its module registers a settings model under the component's name
    (``medvlm.continual.register_settings``), and the recipe takes that section here like the ones
    below (``continual.ties.density``), validated by the model, its defaults written into the
    resolved recipe when the method uses the component; :meth:`settings` hands it over.
    """

    method: str = "seq-ft"
    tasks: list[ContinualTaskSpec] = Field(default_factory=list,
                                           description="the task sequence (a guarded pipeline's tasks are its stages)")
    tasks_from: str | None = Field(None, description="guarded pipeline: the first stage that is a task (earlier "
                                   "stages build the initial model); default: the first stage")
    probes: list[ProbeSpec] = Field(default_factory=list,
                                    description="extra probes after the task probes (the general probe)")
    general_probe: str = Field("general", description="the probe general-ability retention is measured on")
    sac: SacSpec = Field(default_factory=SacSpec)
    mix: MixSpec = Field(default_factory=MixSpec)
    uir: UirSpec = Field(default_factory=UirSpec)
    lwf: LwfSpec = Field(default_factory=LwfSpec)
    ewc: EwcSpec = Field(default_factory=EwcSpec)
    replay: ReplaySpec = Field(default_factory=ReplaySpec)
    olora: OloraSpec = Field(default_factory=OloraSpec)

    _plugged: dict[str, BaseModel] = PrivateAttr(default_factory=dict)

    @property
    def components(self) -> list[str]:
        return [] if self.method == "seq-ft" else self.method.split("+")

    def settings(self, component: str) -> BaseModel | None:
        """The registered settings section of a method component; None for one without."""
        return self._plugged.get(component)

    @model_validator(mode="wrap")
    @classmethod
    def _plugin_sections(cls, data: Any, handler: ModelWrapValidatorHandler[ContinualSpec]) -> ContinualSpec:
        """Keys naming a registered settings section are validated by its model, every other key as
        usual (an unknown one is still an unknown key); errors keep their dotted location."""
        if not isinstance(data, dict):
            return handler(data)
        given = {key: value for key, value in data.items() if key not in cls.model_fields and key in METHOD_SETTINGS}
        spec = handler({key: value for key, value in data.items() if key not in given})
        sections: dict[str, BaseModel] = {}
        errors: list[Any] = []
        for name in [*given, *(c for c in spec.components if c not in given and c in METHOD_SETTINGS)]:
            try:
                sections[name] = METHOD_SETTINGS.get(name).model_validate(given.get(name, {}))
            except ValidationError as exc:
                errors += [{**error, "loc": (name, *error["loc"])} for error in exc.errors()]
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        spec._plugged = sections
        return spec

    @model_serializer(mode="wrap")
    def _dump_plugin_sections(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> dict[str, Any]:
        data = handler(self)
        for name, section in self._plugged.items():
            data[name] = section.model_dump(mode=info.mode)
        return data

    @field_validator("method")
    @classmethod
    def _method(cls, value: str) -> str:
        method = value.strip().lower().replace("_", "-")
        parts = method.split("+")
        if not all(parts) or len(set(parts)) != len(parts):
            raise ValueError(f"'{value}': components joined by '+', each once (e.g. sac+uir)")
        if "seq-ft" in parts:
            if len(parts) > 1:
                raise ValueError("seq-ft is plain sequential finetuning and combines with nothing")
            return method
        for part in parts:
            if part not in CONSOLIDATORS and part not in GUARDS:
                known = ["seq-ft", *CONSOLIDATORS.names(), *GUARDS.names()]
                close = difflib.get_close_matches(part, known, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise ValueError(f"unknown method component '{part}'{hint}; known: {', '.join(known)}")
        consolidators = [part for part in parts if part in CONSOLIDATORS]
        if len(consolidators) > 1:
            raise ValueError(f"at most one consolidator ({', '.join(CONSOLIDATORS.names())}); got "
                             f"{', '.join(consolidators)}")
        return method

    @model_validator(mode="after")
    def _unique_names(self) -> ContinualSpec:
        names = [task.name for task in self.tasks] + [probe.name for probe in self.probes]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"task and probe names must be unique; repeated: {', '.join(duplicates)}")
        for task in self.tasks:
            self.check_guards(task.guards, f"task '{task.name}'")
        return self

    def check_guards(self, guards: TaskGuards, where: str) -> None:
        """A task's ``guards.skip`` names registered components, and its ``sac`` keys are valid. A component
        the method does not use is allowed (nothing to skip), so ``continual.method`` can be switched on
        the command line (e.g. to seq-ft for comparison) without editing every task."""
        for name in guards.skip:
            if name not in CONSOLIDATORS and name not in GUARDS:
                known = [*CONSOLIDATORS.names(), *GUARDS.names()]
                close = difflib.get_close_matches(name, known, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise ValueError(f"{where}: guards.skip names '{name}', not a method component{hint}; known: "
                                 f"{', '.join(known)}")
        if guards.sac:
            self.sac_for(guards)

    def sac_for(self, guards: TaskGuards) -> SacSpec:
        """The SAC settings of one task: the run's, with the task's ``guards.sac`` keys merged in."""
        if not guards.sac:
            return self.sac
        try:
            return SacSpec.model_validate(deep_merge(self.sac.model_dump(mode="json"), guards.sac))
        except ValidationError as exc:
            raise ValueError(f"guards.sac: {exc.errors()[0]['msg']} (at {exc.errors()[0]['loc']})") from None


class EvalSpec(_Section):
    datasets: list[SourceSpec] = Field(default_factory=list)
    limit: int | None = Field(None, ge=1, description="at most this many questions per dataset (quick checks)")
    batch_size: int = Field(16, ge=1)
    max_new_tokens: int = Field(32, ge=1)
    prompt_style: PromptStyle = "plain"
    template: TemplateName | None = None
    bootstrap_samples: int = Field(1000, ge=0, le=100_000)
    seed: Seed = 0
    stages: list[str] = Field(default_factory=list,
                              description="pipeline stages whose models are evaluated (default: the last)")


class OutputSpec(_Section):
    dir: str = "runs/${name}"
    overwrite: bool = False


class StageRef(_Section):
    name: str = Field(pattern=_NAME, description="the stage's directory under output.dir")
    recipe: str
    overrides: dict[str, Any] = Field(default_factory=dict)
    guards: TaskGuards = Field(default_factory=TaskGuards,
                               description="guarded pipelines: this stage's departures from continual.method")
    eval: list[SourceSpec] = Field(default_factory=list,
                                   description="guarded pipelines: the stage's own probe set (a task probe)")


class Recipe(_Section):
    name: str = "run"
    description: str = ""
    model: ModelSpec = Field(default_factory=ModelSpec)
    data: DataSpec = Field(default_factory=DataSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    peft: PeftSpec = Field(default_factory=PeftSpec)
    continual: ContinualSpec | None = None
    eval: EvalSpec = Field(default_factory=EvalSpec)
    output: OutputSpec = Field(default_factory=OutputSpec)
    stages: list[StageRef] = Field(default_factory=list)
    # Where the recipe came from; set by the loader, kept in the resolved copy for provenance.
    source_file: str | None = None

    @model_validator(mode="after")
    def _continual_shape(self) -> Recipe:
        """A task sequence lists tasks; a guarded pipeline's tasks are its stages (from ``tasks_from``)."""
        spec = self.continual
        if spec is None:
            return self
        if not self.stages:
            if not spec.tasks:
                raise ValueError("continual.tasks: a task sequence needs at least one task")
            if spec.tasks_from is not None:
                raise ValueError("continual.tasks_from names a pipeline stage, but this recipe lists no stages")
            return self
        if spec.tasks:
            raise ValueError("a guarded pipeline's tasks are its stages: leave continual.tasks empty")
        names = [stage.name for stage in self.stages]
        if spec.tasks_from is not None and spec.tasks_from not in names:
            raise ValueError(f"continual.tasks_from '{spec.tasks_from}' is not a stage ({', '.join(names)})")
        first = names.index(spec.tasks_from) if spec.tasks_from else 0
        for stage in self.stages[first:]:
            spec.check_guards(stage.guards, f"stage '{stage.name}'")
        with_probe = [stage.name for stage in self.stages[first:] if stage.eval]
        if with_probe and len(with_probe) < len(self.stages) - first:  # the task metrics need every task's probe
            raise ValueError(f"stages {', '.join(with_probe)} have their own probe set (eval) but not every task "
                             "stage does; give every task stage one (Last, BWT, ... need them all), or move it "
                             "to continual.probes")
        untaken = [stage.name for stage in self.stages[:first] if stage.eval or stage.guards.skip or stage.guards.sac]
        if untaken:
            raise ValueError(f"stages {', '.join(untaken)} come before continual.tasks_from: they are not tasks, so "
                             "their eval and guards would be ignored")
        overlap = sorted(set(names[first:]) & {probe.name for probe in spec.probes})
        if overlap:
            raise ValueError(f"probe names must differ from task stage names; repeated: {', '.join(overlap)}")
        return self

    @property
    def output_dir(self) -> Path:
        return Path(self.output.dir)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: not valid YAML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise RecipeError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except RecursionError:
        raise RecipeError(f"{path}: YAML nested too deeply to read") from None
    except ValueError:  # an integer of thousands of digits (Python's int conversion limit)
        raise RecipeError(f"{path}: {TOO_MANY_DIGITS}") from None
    try:
        check_tree(data, max_nodes=MAX_RECIPE_VALUES)
    except TreeError as exc:
        raise RecipeError(f"{path}: refused: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping of sections, got {type(data).__name__}")
    return data


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Merge ``update`` into a copy of ``base``: mappings recursively, everything else replaced."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _load_with_bases(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise RecipeError(f"{path}: 'base' inheritance loops: {chain}")
    raw = _read_yaml(path)
    bases = raw.pop("base", None)
    merged: dict[str, Any] = {}
    for base in [bases] if isinstance(bases, str) else (bases or []):
        if not isinstance(base, str):
            raise RecipeError(f"{path}: key 'base': expected a path or list of paths, got {shorten(base)}")
        merged = deep_merge(merged, _load_with_bases(path.parent / base, (*seen, path)))
    return deep_merge(merged, raw)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``train.learning_rate=1e-4`` → (["train", "learning_rate"], 1e-4)."""
    if "=" not in text:
        raise RecipeError(f"override '{text}': expected KEY=VALUE, e.g. train.learning_rate=1e-4")
    key, _, value_text = text.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise RecipeError(f"override '{text}': empty key segment")
    try:
        value = yaml.safe_load(value_text) if value_text.strip() else ""
    except yaml.YAMLError:
        value = value_text
    except ValueError:  # an integer of thousands of digits (Python's int conversion limit)
        raise RecipeError(f"override '{key}': {TOO_MANY_DIGITS}") from None
    # YAML reads "1e-4" as a string (it wants "1.0e-4"); numbers are what users mean.
    if isinstance(value, str):
        try:
            value = float(value) if re.fullmatch(r"[-+]?\d*\.?\d+[eE][-+]?\d+", value) else value
        except ValueError:
            pass
    return key.split("."), value


def set_dotted(tree: dict[str, Any], keys: list[str], value: Any) -> None:
    node = tree
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise RecipeError(f"override '{'.'.join(keys)}': '{key}' is not a section")
        node = child
    node[keys[-1]] = value


def apply_overrides(tree: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Merge a mapping of overrides whose keys may be dotted (``{"train.max_steps": 5}``) or nested."""
    merged = copy.deepcopy(tree)
    for key, value in overrides.items():
        if "." in key:
            set_dotted(merged, key.split("."), copy.deepcopy(value))
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_vars(value: str, variables: dict[str, str], where: str) -> str:
    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in variables:
            return variables[name]
        if name in os.environ:
            return os.environ[name]
        raise RecipeError(f"{where}: variable ${{{name}}} is not set (define it in the environment)")

    return _VAR.sub(substitute, value)


def _expand_tree(node: Any, variables: dict[str, str], where: str) -> Any:
    if isinstance(node, str):
        return expand_vars(node, variables, where)
    if isinstance(node, list):
        return [_expand_tree(item, variables, f"{where}[{i}]") for i, item in enumerate(node)]
    if isinstance(node, dict):
        return {key: _expand_tree(value, variables, f"{where}.{key}" if where else key)
                for key, value in node.items()}
    return node


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    """Valid field names of the section that ``loc`` (minus its last element) points into."""
    model: Any = Recipe
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        fields = getattr(model, "model_fields", None)
        if model is ContinualSpec and part in METHOD_SETTINGS:
            model = METHOD_SETTINGS.get(part)
            continue
        if not fields or part not in fields:
            return []
        annotation = fields[part].annotation
        model = _section_class(annotation)
        if model is None:
            return []
    return [*getattr(model, "model_fields", {}), *(METHOD_SETTINGS.names() if model is ContinualSpec else [])]


def _section_class(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _section_class(arg)
        if found is not None:
            return found
    return None


def format_validation_error(error: ValidationError, origin: str) -> str:
    lines = []
    for item in error.errors():
        loc = tuple(item["loc"])
        dotted = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc).replace(".[", "[")
        if item["type"] == "extra_forbidden":
            valid = [name for name in _fields_at(loc) if name != "source_file"]
            close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
            hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(valid)}"
            lines.append(f"{origin}: unknown key '{dotted}' ({hint})")
        else:
            got = item.get("input")
            shown = shorten(got) if not isinstance(got, dict) else "a mapping"
            lines.append(f"{origin}: key '{dotted or '<root>'}': {item['msg']} (got {shown})")
    return "\n".join(lines)


def validate(tree: dict[str, Any], origin: str) -> Recipe:
    try:
        return Recipe.model_validate(tree)
    except ValidationError as exc:
        raise RecipeError(format_validation_error(exc, origin)) from None


def load_tree(path: str | os.PathLike, overrides: list[str] | None = None) -> dict[str, Any]:
    """The merged, overridden recipe as a plain mapping (before variable expansion)."""
    path = Path(path)
    tree = _load_with_bases(path)
    for text in overrides or []:
        keys, value = parse_override(text)
        set_dotted(tree, keys, value)
    return tree


def resolve(tree: dict[str, Any], origin: str, variables: dict[str, str] | None = None) -> Recipe:
    """Validate, then expand ``${...}`` variables (``name``, ``output_dir`` and ``medvlm_resources`` are
    always defined)."""
    recipe = validate(tree, origin)  # first pass: schema errors name the user's keys
    names = {"name": recipe.name, "medvlm_resources": str(RESOURCES), **(variables or {})}
    output_dir = expand_vars(recipe.output.dir, names, "output.dir")
    names.setdefault("output_dir", output_dir)
    expanded = _expand_tree(recipe.model_dump(mode="json"), names, "")
    return validate(expanded, origin)


def load_recipe(path: str | os.PathLike, overrides: list[str] | None = None,
                variables: dict[str, str] | None = None) -> Recipe:
    """Read a recipe file with its bases and overrides into a validated :class:`Recipe`."""
    return recipe_from_tree(load_tree(path, overrides), path, variables)


def recipe_from_tree(tree: dict[str, Any], path: str | os.PathLike,
                     variables: dict[str, str] | None = None) -> Recipe:
    """The :class:`Recipe` of a tree :func:`load_tree` read from ``path`` (its origin and ``recipe_dir``)."""
    path = Path(path)
    tree = {"source_file": str(path.resolve()), **tree}
    names = {"recipe_dir": str(path.resolve().parent), **(variables or {})}
    return resolve(tree, str(path), names)
