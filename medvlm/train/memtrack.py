"""Measure the peak memory a piece of training code allocates — on a GPU or on the CPU.

On CUDA this is ``torch.cuda.max_memory_allocated`` (what the memory planner predicts). The CPU has
no such counter, so :class:`PeakMemory` counts it the same way: every tensor storage alive at the
start (parameters, buffers, optimizer states) or created while the block runs (activations,
gradients, temporaries — forward and backward), added when created and removed when freed. Storages
are counted once however many views share them, and at their exact size (no allocator rounding).

Used to validate :mod:`medvlm.model.plan` on tiny models (:func:`measure_training_peak`: the tests and
``bench/plan_accuracy.py``) and by ``bench/gpu_train.py``.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from medvlm.recipe import Recipe


class _StorageCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.refs: dict[int, weakref.ref] = {}
        self.current = 0
        self.peak = 0

    def add(self, tensor: torch.Tensor) -> None:
        if tensor.device.type == "meta":
            return
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key in self.live:
            return
        size = storage.nbytes()
        self.live[key] = size
        self.refs[key] = weakref.ref(storage, lambda _ref, key=key: self._free(key))
        self.current += size
        self.peak = max(self.peak, self.current)

    def _free(self, key: int) -> None:
        size = self.live.pop(key, 0)
        self.refs.pop(key, None)
        self.current -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for item in tree_flatten(out)[0]:
            if isinstance(item, torch.Tensor):
                self.add(item)
        return out


class PeakMemory:
    """``with PeakMemory(device, model, optimizer) as peak: ...`` then ``peak.bytes``.

    ``existing`` are modules, optimizers or tensors whose memory is already allocated and counts
    toward the peak (on CUDA the allocator knows them already and they are ignored).
    """

    def __init__(self, device: torch.device | str = "cpu", *existing: Any) -> None:
        self.device = torch.device(device)
        self.existing = existing
        self.bytes = 0
        self._counter: _StorageCounter | None = None

    def _existing_tensors(self) -> Iterable[torch.Tensor]:
        for item in self.existing:
            if isinstance(item, torch.Tensor):
                yield item
            elif isinstance(item, torch.nn.Module):
                yield from item.parameters()
                yield from item.buffers()
            elif isinstance(item, torch.optim.Optimizer):
                for state in item.state.values():
                    yield from (v for v in state.values() if isinstance(v, torch.Tensor))

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        self._counter = _StorageCounter()
        for tensor in self._existing_tensors():
            self._counter.add(tensor)
        self._counter.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.bytes = torch.cuda.max_memory_allocated(self.device)
            return
        assert self._counter is not None
        self._counter.__exit__(*exc)
        self.bytes = self._counter.peak


def measure_training_peak(recipe: Recipe, *, steps: int = 2, device: str = "cpu") -> int:
    """Peak bytes of ``steps`` AdamW steps on one full-length synthetic batch of ``recipe``'s model.

    The model is built as a medvlm stage builds it (:func:`medvlm.train.setup.prepare_model`:
    quantisation, freeze plan, adapters, gradient checkpointing); each sample is ``data.max_length``
    tokens with one image — a grey square at the processor's base size
    (:func:`medvlm.model.plan.reference_image_side`), prepared and collated as the model's family does
    it (AnyRes tiles, ``image_grid_thw``, token types) — whose image positions follow the first token;
    the optimizer is the Trainer's default fused AdamW.
    """
    from PIL import Image

    from medvlm.model.build import collator_for, image_tokens_for, preparer_for, trainable_components
    from medvlm.model.families import family_of
    from medvlm.model.plan import reference_image_side
    from medvlm.train.setup import prepare_model

    model, processor, _ = prepare_model(recipe, trainable_components(recipe))
    config = model.config
    if recipe.train.gradient_checkpointing:  # the Trainer enables it from its arguments; here, by hand
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.to(device).train()
    generator = torch.Generator().manual_seed(0)
    batch, length = recipe.train.per_device_batch_size, recipe.data.max_length
    side = reference_image_side(config, processor)
    preparer = preparer_for(config, processor, "pad")
    image = preparer.prepare([Image.new("RGB", (side, side), (128, 128, 128))])
    tokens = image_tokens_for(config, processor)
    image_token_id = processor.tokenizer.convert_tokens_to_ids(tokens.token)
    count = tokens.count((side, side))
    items = []
    for _ in range(batch):
        ids = torch.randint(10, 500, (length,), generator=generator)
        ids[1:1 + count] = image_token_id
        items.append({"input_ids": ids, "labels": ids.clone(), **image})
    family = family_of(config)
    tower_dtype = next(p.dtype for n, p in model.named_parameters() if family.component_of(n) == "vision_tower")
    inputs = {key: value.to(device) for key, value in collator_for(config, processor)(items).items()}
    inputs["pixel_values"] = inputs["pixel_values"].to(tower_dtype)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=True)
    with PeakMemory(device, model, optimizer) as peak:
        for _ in range(steps):
            model(**inputs).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    return peak.bytes
