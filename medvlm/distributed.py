"""What medvlm needs to know about the launch: DeepSpeed configs, world size, a clean shutdown.

Training itself is distributed by the transformers ``Trainer`` (DDP under ``torchrun``, DeepSpeed
under the ``deepspeed`` launcher). This module only answers questions asked *before* any weights
load — which ZeRO stage a recipe uses, how many processes share the global batch — and tears the
process group down at the end: torchrun + gloo on CPU aborts at exit (SIGABRT) about one run in
five when a process group is left alive while the model is garbage-collected.
"""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path
from typing import Any

from medvlm.errors import RecipeError


def read_deepspeed_config(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON config a recipe's ``train.deepspeed`` names, validated enough to plan with."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"train.deepspeed: config file not found: {path}")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RecipeError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}") from None
    if not isinstance(config, dict):
        raise RecipeError(f"{path}: a DeepSpeed config must be a JSON object")
    stage = config.get("zero_optimization", {}).get("stage", 0)
    if stage not in (0, 1, 2, 3):
        raise RecipeError(f"{path}: key 'zero_optimization.stage' must be 0, 1, 2 or 3 (got {stage!r})")
    return config


def zero_stage(deepspeed: str | None) -> int | None:
    """ZeRO stage of a recipe's DeepSpeed config; None when the recipe does not use DeepSpeed."""
    if not deepspeed:
        return None
    return int(read_deepspeed_config(deepspeed).get("zero_optimization", {}).get("stage", 0))


def offloads(deepspeed: str | None) -> dict[str, bool]:
    """Which states a ZeRO config moves to CPU memory (``optimizer``, ``param``)."""
    if not deepspeed:
        return {"optimizer": False, "param": False}
    zero = read_deepspeed_config(deepspeed).get("zero_optimization", {})
    return {kind: str(zero.get(f"offload_{kind}", {}).get("device", "none")).lower() in ("cpu", "nvme")
            for kind in ("optimizer", "param")}


def world_size() -> int:
    """Processes taking part in this run (torchrun and the deepspeed launcher both set WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Whether this is the process that prepares and owns the run's files (``RANK`` 0, or no launcher).

    Read from the launcher's environment, so it answers before any process group exists: output
    directories are prepared before the Trainer initialises distributed training.
    """
    return os.environ.get("RANK", "0") == "0"


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def barrier() -> None:
    """Wait for every process (a no-op outside a distributed run)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def forget_deepspeed_config() -> None:
    """After training: later model loads in this process must not be partitioned by ZeRO-3.

    transformers wraps every model it builds in ``deepspeed.zero.Init`` while a ZeRO-3 config is
    registered — a collective; the merge that runs on the main process alone would wait forever.
    """
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()


def shutdown() -> None:
    """Tear the default process group down cleanly: collect garbage, barrier, destroy.

    Call once training and saving are done and the caller has dropped its model and Trainer
    references; a no-op in a single-process run.
    """
    import torch.distributed as dist

    gc.collect()
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
