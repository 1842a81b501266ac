"""Tiny models: build, image-token count, save/reload, freeze plans, loading errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medvlm.errors import ModelError
from medvlm.model.build import (
    STAGE_TRAINABLE,
    apply_freeze_plan,
    component_of,
    load_model,
    load_pretrained,
    num_image_tokens,
)
from medvlm.model.tiny import build_tiny, build_tokenizer
from medvlm.recipe import ModelSpec


def _inputs(processor, size: int = 40):
    image = Image.fromarray((np.arange(size * 30 * 3) % 251).reshape(30, size, 3).astype("uint8"))
    return processor(text=["USER: <image>\nWhat is shown? ASSISTANT:"], images=[image], return_tensors="pt")


@pytest.mark.parametrize("preset, tokens", [("tiny-clip-llama", 16), ("tiny-siglip-mistral", 16),
                                            ("micro-clip-llama", 4)])
def test_image_token_count_matches_the_processor_and_the_model(preset: str, tokens: int) -> None:
    model, processor = build_tiny(preset)
    assert num_image_tokens(model.config) == tokens
    inputs = _inputs(processor)
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == tokens
    with torch.no_grad():
        out = model(**inputs)
    assert out.logits.shape[-1] == len(processor.tokenizer)


def test_build_is_deterministic_per_seed() -> None:
    a, _ = build_tiny("micro-clip-llama", seed=3)
    b, _ = build_tiny("micro-clip-llama", seed=3)
    c, _ = build_tiny("micro-clip-llama", seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_tokenizer_is_deterministic_and_encodes_any_text() -> None:
    first, second = build_tokenizer(600), build_tokenizer(600)
    assert first.get_vocab() == second.get_vocab()
    text = "肺部 CT: 左侧病灶 — lesion 3.5 cm"
    assert first.decode(first(text, add_special_tokens=False)["input_ids"]) == text
    assert first.convert_tokens_to_ids("<image>") != first.unk_token_id


@pytest.mark.parametrize("preset", ["tiny-clip-llama", "tiny-siglip-mistral"])
def test_save_and_reload_give_identical_logits(preset: str, tmp_path: Path) -> None:
    model, processor = build_tiny(preset, seed=1)
    model.eval()
    inputs = _inputs(processor)
    with torch.no_grad():
        before = model(**inputs).logits
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    again, processor2 = load_pretrained(tmp_path)
    again.eval()
    with torch.no_grad():
        after = again(**_inputs(processor2)).logits
    assert torch.equal(before, after)
    assert processor2.tokenizer.get_vocab() == processor.tokenizer.get_vocab()
    assert processor2.chat_template == processor.chat_template


def test_freeze_plans_per_stage(micro_model) -> None:
    model, _ = build_tiny("micro-clip-llama")
    for stage, components in STAGE_TRAINABLE.items():
        summary = apply_freeze_plan(model, components)
        assert set(summary.trainable) == set(components), stage
        for name, param in model.named_parameters():
            assert param.requires_grad == (component_of(name) in components), (stage, name)
    align = apply_freeze_plan(model, STAGE_TRAINABLE["align"])
    assert align.trainable == {"projector": align.total["projector"]}


def test_freeze_plan_rejects_unknown_components(micro_model) -> None:
    with pytest.raises(ModelError, match="unknown component"):
        apply_freeze_plan(micro_model[0], ["vision"])


def test_component_names_cover_every_parameter(tiny_model) -> None:
    model, _ = tiny_model
    assert {component_of(name) for name, _ in model.named_parameters()} == \
        {"vision_tower", "projector", "language_model"}
    assert component_of("base_model.model.model.multi_modal_projector.linear_1.weight") == "projector"


def test_loading_an_original_llava_checkpoint_says_convert(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava_mistral",
                                                       "mm_vision_tower": "openai/clip"}))
    with pytest.raises(ModelError, match="medvlm convert-llava"):
        load_pretrained(tmp_path)


def test_missing_model_directory_and_missing_config(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="model directory not found"):
        load_pretrained(tmp_path / "nope")
    with pytest.raises(ModelError, match="no config.json"):
        load_pretrained(tmp_path)


def test_recipe_without_model_is_an_error() -> None:
    with pytest.raises(ModelError, match="names no model"):
        load_model(ModelSpec())
