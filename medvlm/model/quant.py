"""bitsandbytes quantisation for QLoRA: the config, the kept-in-full modules, training prep, dequantising.

Only the language model's linear layers are quantised. The vision tower, the projector and
``lm_head`` stay in the model's dtype, named by *full prefixes* derived from the model family
(:meth:`medvlm.model.families.ModelFamily.quantization_skip_modules`): a bare
``multi_modal_projector`` would not match transformers' module names, the projector would be
quantised, and peft would then fail to train it ("only Tensors of floating point dtype can
require gradients").
"""

from __future__ import annotations

import importlib.util
import warnings
from typing import TYPE_CHECKING, Any

import torch

from medvlm.distributed import local_rank
from medvlm.errors import ModelError
from medvlm.recipe import PeftSpec

if TYPE_CHECKING:
    from medvlm.model.families import ModelFamily

# LLaVA-1.5's; :func:`for_family` sets any family's own.
SKIP_MODULES: tuple[str, ...] = ("model.vision_tower", "model.multi_modal_projector", "lm_head")

# bitsandbytes' 8-bit matmul warns on every call that float32 inputs are cast to float16.
warnings.filterwarnings("ignore", message="MatMul8bitLt: inputs will be cast")


def require_bitsandbytes() -> None:
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelError("peft.method=qlora needs bitsandbytes: pip install 'medvlm[quantization]'")


def quantization_config(spec: PeftSpec, compute_dtype: torch.dtype) -> Any | None:
    """The ``BitsAndBytesConfig`` a QLoRA recipe asks for, or None for other PEFT methods."""
    if spec.method != "qlora":
        return None
    require_bitsandbytes()
    from transformers import BitsAndBytesConfig

    if spec.bits == 4:
        return BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=spec.quant_type, bnb_4bit_use_double_quant=spec.double_quant,
            bnb_4bit_compute_dtype=compute_dtype, llm_int8_skip_modules=list(SKIP_MODULES))
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=list(SKIP_MODULES))


def for_family(config: Any, family: ModelFamily) -> Any:
    """``config`` with the family's unquantised modules (the tower and projector of that architecture)."""
    skip = family.quantization_skip_modules()
    if list(config.llm_int8_skip_modules or []) == skip:
        return config
    from copy import deepcopy

    config = deepcopy(config)
    config.llm_int8_skip_modules = skip
    return config


def quantized_device_map() -> dict[str, Any]:
    """bitsandbytes weights are placed at load time: this process's GPU, or the CPU."""
    if torch.cuda.is_available():
        return {"": torch.device("cuda", local_rank())}
    return {"": "cpu"}


def is_quantized(model: torch.nn.Module) -> bool:
    """Whether any layer of ``model`` holds bitsandbytes weights (the flags on the model can be stale)."""
    if importlib.util.find_spec("bitsandbytes") is None:
        return False
    import bitsandbytes as bnb

    return any(isinstance(module, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)) for module in model.modules())


def avoid_cpu_packing_bug(model: torch.nn.Module) -> None:
    """Keep bitsandbytes 0.50 off its CPU inference fast path for layers it cannot pack.

    On CPUs with AVX512-BF16, ``Linear4bit`` repacks its weight on the first no-grad eval forward;
    the repacking assumes ``in_features`` is a multiple of the quantisation block size (64) and
    ``out_features`` of 32 and crashes otherwise (tiny test models; every 7B layer is fine).
    Such layers use the generic dequantise-and-matmul path instead, which gives the same numbers.
    """
    for module in model.modules():
        state = getattr(getattr(module, "weight", None), "quant_state", None)
        if state is None or not hasattr(module, "support_avx512bf16_for_cpu"):
            continue
        out_features, in_features = state.shape[0], state.shape[-1]
        if in_features % state.blocksize or out_features % 32:
            module.support_avx512bf16_for_cpu = False


def prepare_for_kbit_training(model: torch.nn.Module, gradient_checkpointing: bool) -> torch.nn.Module:
    """peft's standard preparation: freeze, upcast the unquantised weights to float32, input grads.

    The float32 upcast of the vision tower, projector, embeddings and ``lm_head`` is what keeps
    mixed-precision training of the adapters stable; the memory planner counts it.
    """
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(
        model, use_gradient_checkpointing=gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if gradient_checkpointing else None)


def dequantized(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """A plain copy of a quantised model: every bitsandbytes layer becomes ``nn.Linear`` in ``dtype``.

    Adapters trained on a quantised model correct *its* weights, so merging them into the
    dequantised weights reproduces the trained function; merging into the original full-precision
    weights would not (the quantisation error would come back uncorrected).
    """
    plain = model.dequantize(dtype=dtype).to(dtype)
    # transformers leaves these set; peft would then treat the plain model as a k-bit one
    plain.is_loaded_in_4bit = plain.is_loaded_in_8bit = False
    return plain
