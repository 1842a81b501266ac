"""``medvlm plan``: per-GPU training memory of a recipe, estimated before any weights load.

The model is instantiated on PyTorch's ``meta`` device (shapes, no memory), so parameter counts
are exact for any config of any model family; the components, the quantised linears and the
image-token count come from the family (:mod:`medvlm.model.families`). The estimate is the peak
of what PyTorch allocates — the number
``torch.cuda.max_memory_allocated`` reports — as the sum of:

* **weights**: by dtype; QLoRA's 4-bit NF4 (0.5 byte + block scales) or 8-bit language-model
  linears, and the float32 copies peft's k-bit preparation makes of everything else; LoRA/DoRA
  adapters (float32) and the fully trained projector copy (``modules_to_save``);
* **optimizer states**: AdamW's two moments in the parameter's dtype (DeepSpeed: float32 master
  weights and moments, 12 bytes per trainable parameter), partitioned over GPUs by ZeRO 1-3 or
  moved to the CPU by ``offload_optimizer``;
* **gradients** of the trainable parameters (partitioned from ZeRO-2 on);
* **activations** at the recipe's sequence length (``data.max_length``, image tokens included) ×
  per-device batch: per decoder layer and token, the bytes autograd saves — counted tensor by
  tensor for Llama/Mistral layers with SDPA attention and fitted exactly (``LAYER_BYTES``) — or,
  with gradient checkpointing, each layer's input plus one layer recomputed; the logits and the
  float32 loss buffers (``tokens × vocab``), which often dominate small models;
* the larger of the backward peak (activations + loss buffers) and the optimizer-step peak
  (all gradients; the Trainer's default fused AdamW needs no temporaries).

Not counted: the CUDA context (~0.5-1 GiB outside PyTorch's allocator) and fragmentation — the
fit verdict adds ``HEADROOM`` for those. Validated against measured peaks of tiny models on the
CPU (tests/unit/test_plan.py, bench/plan_accuracy.py) and, on a GPU, by bench/gpu_train.py.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import torch

from medvlm.model.families.llava import llava_med_v15_config
from medvlm.recipe import Recipe

GIB = 1024**3
# CUDA context + allocator fragmentation the verdict keeps free (measured PyTorch peaks exclude them)
HEADROOM_FRACTION = 0.08
HEADROOM_BYTES = int(0.75 * GIB)

# Bytes autograd saves per token in one Llama/Mistral decoder layer (SDPA attention), as
# a·hidden + b·kv_dim + c·intermediate + d (+ 4 per attention head for the softmax statistics,
# + 4·r per LoRA-adapted linear for the adapter's low-rank activation). Counted with saved-tensor
# hooks on transformers 5.23 layers of several shapes; the fit is exact on every shape measured.
#   mode: full = weights trainable; frozen = weights frozen but gradients flow through (stage 1
#   trains the projector below the LLM); lora / lora_dropout = frozen base + adapters on all seven
#   linears (dropout > 0 keeps a dropped copy of each adapter input). DoRA adds (act + 4) bytes per
#   output feature of each adapted linear (measured peaks of tiny models; see _layer_bytes).
LAYER_BYTES: dict[tuple[str, int], tuple[int, int, int, int]] = {
    ("full", 4): (34, 8, 16, 8), ("full", 2): (21, 4, 8, 8),
    ("frozen", 4): (18, 8, 12, 8), ("frozen", 2): (13, 4, 6, 8),
    ("lora", 4): (26, 8, 16, 8), ("lora", 2): (37, 4, 10, 8),
    ("lora_dropout", 4): (66, 8, 20, 8), ("lora_dropout", 2): (61, 4, 14, 8),
}
LORA_LINEARS_PER_LAYER = 7
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass
class ModelShapes:
    """Everything the estimate needs, read from the model config on the meta device."""

    params: dict[str, int]  # per component: vision_tower, projector, language_model
    lm_linear_params: int  # language-model nn.Linear weights bitsandbytes would quantise
    lm_linear_out_features: int
    lora_params: int  # adapters the recipe's target regex creates (incl. DoRA magnitudes)
    lora_linears: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    head_dim: int
    kv_dim: int
    vocab: int
    vision_hidden: int
    image_tokens: int  # per image, for the reference image (see reference_image_tokens)
    family: str = "llava"


@dataclass
class MemoryPlan:
    recipe: str
    gpus: int
    zero_stage: int | None
    tokens_per_step: int  # per device and micro-batch
    terms: dict[str, int]
    total: int
    gpu_bytes: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def needed(self) -> int:
        """The total plus headroom for the CUDA context and fragmentation."""
        return int(self.total * (1 + HEADROOM_FRACTION)) + HEADROOM_BYTES

    @property
    def fits(self) -> bool | None:
        return None if self.gpu_bytes is None else self.needed <= self.gpu_bytes

    def to_dict(self) -> dict[str, Any]:
        return {"recipe": self.recipe, "gpus": self.gpus, "zero_stage": self.zero_stage,
                "tokens_per_micro_batch": self.tokens_per_step,
                "terms_gib": {k: round(v / GIB, 3) for k, v in self.terms.items()},
                "peak_allocated_gib": round(self.total / GIB, 3), "with_headroom_gib": round(self.needed / GIB, 3),
                "gpu_gib": None if self.gpu_bytes is None else round(self.gpu_bytes / GIB, 1), "fits": self.fits,
                "notes": self.notes}

    def describe(self) -> str:
        lines = [f"memory plan for {self.recipe} — per GPU, {self.gpus} GPU(s)"
                 + (f", ZeRO-{self.zero_stage}" if self.zero_stage is not None else "")
                 + f", {self.tokens_per_step} tokens per micro-batch"]
        for name, value in self.terms.items():
            lines.append(f"  {name:<22} {value / GIB:9.2f} GiB")
        lines.append(f"  {'peak allocated':<22} {self.total / GIB:9.2f} GiB   (torch.cuda.max_memory_allocated)")
        lines.append(f"  {'with headroom':<22} {self.needed / GIB:9.2f} GiB   (+CUDA context, fragmentation)")
        if self.gpu_bytes is not None:
            verdict = "fits" if self.fits else "does NOT fit"
            lines.append(f"  → {verdict} a {self.gpu_bytes / GIB:.0f} GiB GPU")
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------------------


# Shapes of released models, to plan before downloading anything (``medvlm plan --shapes NAME``).
REFERENCE_CONFIGS = {"llava-med-v1.5-7b": llava_med_v15_config}


def meta_model(recipe: Recipe, reference: str | None = None) -> torch.nn.Module:
    """The recipe's model with shapes only (no weights read, no memory)."""
    return meta_model_and_processor(recipe, reference)[0]


def meta_model_and_processor(recipe: Recipe, reference: str | None = None) -> tuple[torch.nn.Module, Any]:
    """The recipe's model with shapes only, and its processor (None for reference shapes)."""
    from medvlm.errors import ModelError
    from medvlm.model.build import check_llava_dir
    from medvlm.model.families.llava import LLAVA

    spec = recipe.model
    if reference is not None:
        if reference not in REFERENCE_CONFIGS:
            raise ModelError(f"unknown reference shapes '{reference}'; known: {', '.join(REFERENCE_CONFIGS)}")
        with torch.device("meta"):
            return LLAVA.model_class()(REFERENCE_CONFIGS[reference]()), None
    if spec.path:
        from pathlib import Path

        try:
            family = check_llava_dir(Path(spec.path), spec.family)
        except ModelError as exc:
            raise ModelError(f"{exc}; to plan before the model is on disk, use the released shapes: "
                             f"--shapes {' | '.join(REFERENCE_CONFIGS)}") from None
        config = family.config_class().from_pretrained(spec.path)
        processor = family.finish_processor(family.load_processor(Path(spec.path)), config)
        with torch.device("meta"):
            return family.model_class()(config), processor
    if spec.preset:
        from medvlm.model.build import load_model

        with torch.device("meta"):
            return load_model(spec)
    raise ModelError("the recipe names no model: set model.path or model.preset")


def model_shapes(model: torch.nn.Module, recipe: Recipe, processor: Any = None) -> ModelShapes:
    from medvlm.model.adapters import target_modules
    from medvlm.model.families import family_of

    family = family_of(model.config)
    params: dict[str, int] = {}
    for name, param in model.named_parameters():
        component = family.component_of(name) or "other"
        params[component] = params.get(component, 0) + param.numel()
    target = re.compile(target_modules(recipe.peft, family))
    dora = recipe.peft.method == "dora" or recipe.peft.dora
    lm_linear = lm_out = lora = lora_linears = 0
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        if name.startswith(family.language_model_prefix):
            lm_linear += module.weight.numel()
            lm_out += module.out_features
        if target.fullmatch(name):
            lora_linears += 1
            lora += recipe.peft.r * (module.in_features + module.out_features) + (module.out_features if dora else 0)
    text = family.text_config(model.config)
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    return ModelShapes(
        params=params, lm_linear_params=lm_linear, lm_linear_out_features=lm_out, lora_params=lora,
        lora_linears=lora_linears, hidden=text.hidden_size, intermediate=text.intermediate_size,
        layers=text.num_hidden_layers, heads=text.num_attention_heads, head_dim=head_dim,
        kv_dim=(text.num_key_value_heads or text.num_attention_heads) * head_dim, vocab=text.vocab_size,
        vision_hidden=family.vision_hidden_size(model.config),
        image_tokens=reference_image_tokens(model.config, processor), family=family.name)


def reference_image_side(config: Any, processor: Any) -> int:
    """The side of the square image the planner assumes (and :func:`medvlm.train.memtrack.measure_training_peak`
    feeds): the image processor's base input size (the family's, for dynamic resolution)."""
    from medvlm.model.build import preparer_for

    return preparer_for(config, processor).side or 224


def reference_image_tokens(config: Any, processor: Any) -> int:
    """Image positions of one reference image: the family's count for a square image at the
    processor's base size (LLaVA-1.5 and Gemma 3: their fixed count, whatever the image)."""
    from medvlm.model.families import family_of

    tokens = family_of(config).image_tokens(processor, config) if processor is not None else None
    if tokens is None:
        from medvlm.model.families.llava import llava_image_token_count

        return llava_image_token_count(config)
    side = reference_image_side(config, processor)
    return tokens.count((side, side))


# --------------------------------------------------------------------------------------------------
# Terms
# --------------------------------------------------------------------------------------------------


def _quantised_bytes(numel: int, out_features: int, bits: int, double_quant: bool) -> int:
    """bitsandbytes storage: 4-bit = 0.5 byte + a float32 absmax per 64 weights (double quantisation:
    an 8-bit absmax plus a float32 scale per 256 blocks); 8-bit = 1 byte + a float32 scale per row."""
    if bits == 8:
        return numel + 4 * out_features
    blocks = math.ceil(numel / 64)
    scales = blocks + 4 * math.ceil(blocks / 256) if double_quant else 4 * blocks
    return numel // 2 + scales


def _layer_bytes(mode: str, act_bytes: int, s: ModelShapes, lora_r: int, dora: bool = False) -> int:
    from medvlm.model.families import get_family

    a, b, c, d = (x + y for x, y in zip(LAYER_BYTES[(mode, act_bytes)], get_family(s.family).extra_layer_bytes(mode),
                                        strict=True))
    per_token = a * s.hidden + b * s.kv_dim + c * s.intermediate + d + 4 * s.heads
    if mode.startswith("lora"):
        per_token += 4 * lora_r * LORA_LINEARS_PER_LAYER
    if dora:  # DoRA rescales every adapted output: a float32 and an activation-dtype copy per feature
        per_token += (act_bytes + 4) * (3 * s.hidden + 2 * s.kv_dim + 2 * s.intermediate)
    return per_token


def plan_memory(recipe: Recipe, *, gpus: int | None = None, gpu_memory_gb: float | None = None,
                shapes: ModelShapes | None = None, reference: str | None = None, teacher: bool = False) -> MemoryPlan:
    """Estimate one GPU's peak training memory for ``recipe`` (see the module docstring).

    ``teacher``: a continual guard (UIR, LwF) keeps a frozen copy of the model the stage starts from
    beside the one that trains — the whole model in ``model.dtype``, unquantised and unsharded, as
    :meth:`medvlm.continual.TaskContext.teacher` loads it — counted as the ``teacher copy`` term.
    """
    from medvlm.distributed import offloads, world_size, zero_stage
    from medvlm.model.adapters import check_peft_plan
    from medvlm.model.build import trainable_components

    trainable = trainable_components(recipe)
    stage = zero_stage(recipe.train.deepspeed)
    check_peft_plan(recipe.peft, trainable, zero_stage=stage)
    if shapes is None:
        model, processor = meta_model_and_processor(recipe, reference)
        shapes = model_shapes(model, recipe, processor)
    n = gpus or world_size()
    offload = offloads(recipe.train.deepspeed)
    peft = recipe.peft
    d = DTYPE_BYTES[recipe.model.dtype]
    notes: list[str] = []
    total_params = sum(shapes.params.values())
    projector = shapes.params.get("projector", 0)
    train_projector = "projector" in trainable
    adapters = peft.method != "none"

    # weights and what trains
    if peft.method == "qlora":
        kept = total_params - shapes.lm_linear_params  # upcast to float32 by peft's k-bit preparation
        weights = _quantised_bytes(shapes.lm_linear_params, shapes.lm_linear_out_features, peft.bits,
                                   peft.double_quant) + 4 * kept
        trainable_bytes_per_param = 4
    else:
        weights = d * total_params
        trainable_bytes_per_param = d
    if adapters:
        saved_copy = projector if train_projector and peft.train_projector else 0
        weights += 4 * shapes.lora_params + trainable_bytes_per_param * saved_copy
        trained_numel = shapes.lora_params + saved_copy
        trained_bytes = 4 * shapes.lora_params + trainable_bytes_per_param * saved_copy
    else:
        trained_numel = sum(shapes.params.get(c, 0) for c in trainable)
        trained_bytes = d * trained_numel

    # optimizer states and gradients, with ZeRO partitioning / offload
    if stage is not None:
        master = 12 * trained_numel if d == 2 else 8 * trained_numel  # fp32 master + moments (bf16 training)
        optimizer = 0 if offload["optimizer"] else master // (n if stage >= 1 else 1)
        gradients = trained_bytes // (n if stage >= 2 else 1)
        if stage == 3:
            weights = weights // n if not offload["param"] else 0
            live = 2 * d * (shapes.params.get("language_model", 0) // max(1, shapes.layers))
            weights += live  # ZeRO-3 gathers about two layers at a time
            notes.append("ZeRO-3: parameters partitioned; two layers' worth gathered at a time")
        step_temp = 0
    else:
        optimizer = 2 * trained_bytes  # AdamW: exp_avg and exp_avg_sq in the parameter's dtype
        gradients = trained_bytes
        step_temp = 0  # the Trainer's default fused AdamW updates in place

    # activations for one micro-batch of max_length tokens (image tokens are part of max_length)
    tokens = recipe.train.per_device_batch_size * recipe.data.max_length
    act = 4 if peft.method == "qlora" else d
    if adapters:
        mode = "lora_dropout" if peft.dropout > 0 else "lora"
    elif "language_model" in trainable:
        mode = "full"
    elif train_projector:
        mode = "frozen"
    else:
        mode = ""
    activations = backward_extra = logits = 0
    if mode:
        per_layer = _layer_bytes(mode, act, shapes, peft.r, dora=peft.method == "dora" or peft.dora) * tokens
        final_norm = tokens * shapes.hidden * (4 + act)
        logits = tokens * shapes.vocab * (act + 8)  # logits/log-softmax and float32 gradient buffers
        activations = final_norm + ((recipe.train.per_device_batch_size * shapes.image_tokens
                                     * (shapes.vision_hidden + 2 * shapes.hidden) * act) if train_projector else 0)
        if peft.method == "qlora" and peft.bits == 8:
            # bitsandbytes' int8 matmul keeps its input on the autograd context (not as a saved
            # tensor), so gradient checkpointing cannot free it: one input per linear, every layer
            activations += shapes.layers * tokens * act * (6 * shapes.hidden + shapes.intermediate)
            notes.append("8-bit QLoRA: bitsandbytes keeps every int8 linear's input for the backward pass, "
                         "even with gradient checkpointing; 4-bit does not")
        if recipe.train.gradient_checkpointing:
            # kept: each layer's input (+ its float32 rotary tables) and the embeddings; the backward
            # pass peaks either in the loss or while one layer is recomputed with its in/out gradients
            activations += tokens * (shapes.layers * (act * shapes.hidden + 8 * shapes.head_dim)
                                     + 2 * act * shapes.hidden)
            backward_extra = max(logits, per_layer + 2 * tokens * act * shapes.hidden)
        else:
            activations += shapes.layers * per_layer
            backward_extra = logits
    else:
        notes.append("this stage does not train through the language model; activations not estimated")
    if "vision_tower" in trainable:
        notes.append("vision-tower activations are not estimated (only the contrastive tiny-tower stage trains it)")

    terms = {"weights": weights, "optimizer states": optimizer, "gradients": gradients,
             "activations": activations, "logits + loss": logits}
    teacher_bytes = d * total_params if teacher else 0
    if teacher:
        terms["teacher copy"] = teacher_bytes
        notes.append("a continual guard's frozen teacher (the pre-stage model) is held beside the trained model; "
                     "its no-grad forward activations are not counted")
    backward_peak = activations + backward_extra
    step_peak = gradients + step_temp
    total = weights + teacher_bytes + optimizer + max(backward_peak, step_peak)
    if step_peak > backward_peak:
        notes.append("the optimizer step (all gradients alive) is the peak, not the backward pass")
    gpu_bytes = int(gpu_memory_gb * GIB) if gpu_memory_gb else None
    plan = MemoryPlan(recipe.source_file or recipe.name, n, stage, tokens, terms, total, gpu_bytes, notes)
    if plan.fits is False:
        plan.notes.extend(_suggestions(recipe, stage))
    return plan


def _suggestions(recipe: Recipe, stage: int | None) -> list[str]:
    tips = []
    if not recipe.train.gradient_checkpointing:
        tips.append("try train.gradient_checkpointing=true")
    if recipe.train.per_device_batch_size > 1:
        tips.append("lower train.per_device_batch_size and raise train.gradient_accumulation_steps")
    if recipe.peft.method in ("none", "lora", "dora"):
        tips.append("try peft.method=qlora (4-bit base)")
    if recipe.peft.method == "none" and stage != 3:
        tips.append("shard with DeepSpeed: train.deepspeed=recipes/deepspeed/zero3.json (or zero3_offload.json)")
    return tips
