"""Every PEFT mode on a tiny model: what is quantised, what trains, gradients, checkpointing, merging."""

from __future__ import annotations

import pytest
import torch

from medvlm.model.adapters import apply_lora, merge_adapter
from medvlm.model.build import apply_freeze_plan, load_model
from medvlm.model.quant import dequantized, is_quantized, quantization_config
from medvlm.recipe import ModelSpec, PeftSpec

TRAINABLE = ("projector", "language_model")
MODES = {
    "lora": PeftSpec(method="lora", r=4, alpha=8, dropout=0.0),
    "dora": PeftSpec(method="dora", r=4, alpha=8, dropout=0.0),
    "qlora-nf4": PeftSpec(method="qlora", r=4, alpha=8, dropout=0.0),
    "qlora-int8": PeftSpec(method="qlora", bits=8, r=4, alpha=8, dropout=0.0),
    "qdora-nf4": PeftSpec(method="qlora", dora=True, r=4, alpha=8, dropout=0.0),
}


def batch(model) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 200, (2, 14), generator=generator)
    ids[:, 1:5] = model.config.image_token_id  # micro-clip-llama: 4 image positions
    pixels = torch.randn(2, 3, 16, 16, generator=generator)
    return {"input_ids": ids, "pixel_values": pixels, "labels": ids.clone()}


def build(spec: PeftSpec, gradient_checkpointing: bool = False):
    quantization = quantization_config(spec, torch.float32)
    model, _ = load_model(ModelSpec(preset="micro-clip-llama"), quantization=quantization)
    apply_freeze_plan(model, ())
    return apply_lora(model, spec, TRAINABLE, gradient_checkpointing=gradient_checkpointing)


def layer_types(model) -> dict[str, str]:
    return {name.removeprefix("base_model.model."): type(module).__name__ for name, module in model.named_modules()}


@pytest.mark.parametrize("bits, kind", [(4, "Linear4bit"), (8, "Linear8bitLt")])
def test_qlora_quantises_only_language_model_linears(bits: int, kind: str) -> None:
    quantization = quantization_config(PeftSpec(method="qlora", bits=bits), torch.float32)
    model, _ = load_model(ModelSpec(preset="micro-clip-llama"), quantization=quantization)
    types = {name: type(module).__name__ for name, module in model.named_modules()}
    assert types["model.language_model.layers.0.self_attn.q_proj"] == kind
    assert types["model.language_model.layers.1.mlp.down_proj"] == kind
    assert types["model.multi_modal_projector.linear_1"] == "Linear"
    assert types["model.vision_tower.encoder.layers.0.self_attn.q_proj"] == "Linear"
    assert types["lm_head"] == "Linear"
    assert is_quantized(model)
    if bits == 4:
        state = model.model.language_model.layers[0].self_attn.q_proj.weight.quant_state
        assert state.quant_type == "nf4" and state.nested  # double quantisation: quantised absmax


@pytest.mark.parametrize("mode", list(MODES))
def test_each_mode_trains_adapters_and_the_projector_only(mode: str) -> None:
    model = build(MODES[mode])
    trainable = {name for name, param in model.named_parameters() if param.requires_grad}
    assert trainable, mode
    assert all("lora_" in name or "modules_to_save" in name for name in trainable), mode
    assert any("multi_modal_projector.modules_to_save" in name for name in trainable)
    if mode.startswith(("dora", "qdora")):
        assert any("lora_magnitude_vector" in name for name in trainable)
    assert not any("vision_tower" in name for name in trainable)

    inputs = batch(model)
    loss = model(**inputs).loss
    loss.backward()
    grads = {name: param.grad for name, param in model.named_parameters() if param.requires_grad}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values()), mode
    assert any(float(g.abs().sum()) > 0 for name, g in grads.items() if "lora_B" in name)  # B starts at 0
    assert any(float(g.abs().sum()) > 0 for name, g in grads.items() if "modules_to_save" in name)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    for _ in range(4):
        optimizer.step()
        optimizer.zero_grad()
        model(**inputs).loss.backward()
    assert float(model(**inputs).loss.detach()) < float(loss.detach()), mode


@pytest.mark.parametrize("mode", ["lora", "qlora-nf4"])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(mode: str) -> None:
    results = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = build(MODES[mode], gradient_checkpointing=checkpointing)
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        assert model.base_model.model.model.language_model.gradient_checkpointing is checkpointing
        loss = model(**batch(model)).loss
        loss.backward()
        results.append((float(loss), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert loss_a == pytest.approx(loss_b, abs=1e-6)
    assert grads_a.keys() == grads_b.keys()
    assert max(float((grads_a[k] - grads_b[k]).abs().max()) for k in grads_a) < 1e-5


@pytest.mark.parametrize("mode", ["lora", "qlora-nf4", "qlora-int8"])
def test_merging_reproduces_the_trained_model(mode: str, tmp_path) -> None:
    """An adapter merged into the (dequantised) base computes what the adapted model computed."""
    spec = MODES[mode]
    model = build(spec)
    with torch.no_grad():  # a trained-looking adapter and projector
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.05)
    model.train()  # bitsandbytes' CPU inference path differs from its training path only in speed
    inputs = batch(model)
    inputs.pop("labels")
    with torch.no_grad():
        expected = model(**inputs).logits
    model.save_pretrained(tmp_path)

    quantization = quantization_config(spec, torch.float32)
    base, _ = load_model(ModelSpec(preset="micro-clip-llama"), quantization=quantization)
    if quantization is not None:
        base = dequantized(base, torch.float32)
    assert not is_quantized(base)
    plain = merge_adapter(base, tmp_path)
    assert type(plain).__name__ == "LlavaForConditionalGeneration" and not is_quantized(plain)
    plain.eval()
    with torch.no_grad():
        actual = plain(**inputs).logits
    assert float((actual - expected).abs().max()) <= 1e-4
