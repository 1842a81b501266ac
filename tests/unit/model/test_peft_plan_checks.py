"""PEFT plans: incompatible combinations are refused before any weights load; quantisation configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from medvlm.errors import ModelError, RecipeError
from medvlm.model.adapters import check_peft_plan, lora_config
from medvlm.model.quant import SKIP_MODULES, quantization_config
from medvlm.recipe import PeftSpec, load_recipe

LM_AND_PROJECTOR = ("projector", "language_model")


def test_lora_on_a_stage_that_does_not_train_the_llm_is_refused() -> None:
    with pytest.raises(ModelError, match="does not train it"):
        check_peft_plan(PeftSpec(method="lora"), ("projector",))


def test_lora_on_the_vision_tower_is_refused() -> None:
    with pytest.raises(ModelError, match="vision tower"):
        check_peft_plan(PeftSpec(method="dora"), ("vision_tower", "language_model"))


def test_invalid_target_regex_is_refused() -> None:
    with pytest.raises(ModelError, match="regular expression"):
        check_peft_plan(PeftSpec(method="lora", target_modules="(q_proj"), LM_AND_PROJECTOR)


@pytest.mark.parametrize("bits", [4, 8])
def test_qlora_under_zero3_is_refused_but_zero2_is_fine(bits: int) -> None:
    spec = PeftSpec(method="qlora", bits=bits)
    with pytest.raises(ModelError, match="ZeRO-3"):
        check_peft_plan(spec, LM_AND_PROJECTOR, zero_stage=3)
    check_peft_plan(spec, LM_AND_PROJECTOR, zero_stage=2)
    check_peft_plan(PeftSpec(method="lora"), LM_AND_PROJECTOR, zero_stage=3)  # LoRA × ZeRO-3 works


@pytest.mark.parametrize("spec", [PeftSpec(method="dora", merge_at_end=False),
                                  PeftSpec(method="qlora", dora=True, merge_at_end=False)])
def test_dora_without_merging_is_refused(spec: PeftSpec) -> None:
    """Plain transformers would load a DoRA adapter directory wrongly (magnitudes dropped)."""
    with pytest.raises(ModelError, match="DoRA magnitude"):
        check_peft_plan(spec, LM_AND_PROJECTOR)


def test_qlora_without_merging_is_refused() -> None:
    """The run would train to the end and then fail to write a loadable model/."""
    with pytest.raises(ModelError, match="merge_at_end=true"):
        check_peft_plan(PeftSpec(method="qlora", merge_at_end=False), LM_AND_PROJECTOR)


def test_dora_flag_without_adapters_is_a_recipe_error(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"peft": {"method": "none", "dora": True}}))
    with pytest.raises(RecipeError, match="peft.dora needs"):
        load_recipe(path)


def test_rejection_happens_before_any_weights_load(tmp_path: Path, monkeypatch) -> None:
    """QLoRA × ZeRO-3: the stage fails before it reads data or loads (or even builds) a model."""
    from medvlm.train import setup, stage

    ds = tmp_path / "zero3.json"
    ds.write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    recipe_path = tmp_path / "r.yaml"
    recipe_path.write_text(yaml.safe_dump({
        "model": {"preset": "micro-clip-llama"}, "peft": {"method": "qlora"},
        "data": {"train": [{"dataset": "synthetic", "path": str(tmp_path / "none")}]},
        "train": {"deepspeed": str(ds)}, "output": {"dir": str(tmp_path / "out")}}))

    def forbidden(*args, **kwargs):
        raise AssertionError("weights were loaded before the plan was checked")

    monkeypatch.setattr(setup, "load_model", forbidden)
    with pytest.raises(ModelError, match="ZeRO-3"):
        stage.run_stage(load_recipe(recipe_path))
    assert not (tmp_path / "out").exists()


def test_bad_deepspeed_config_is_reported_with_its_path(tmp_path: Path) -> None:
    from medvlm.distributed import zero_stage

    bad = tmp_path / "ds.json"
    bad.write_text("{not json")
    with pytest.raises(RecipeError, match="ds.json: not valid JSON"):
        zero_stage(str(bad))
    with pytest.raises(RecipeError, match="not found"):
        zero_stage(str(tmp_path / "missing.json"))
    assert zero_stage(None) is None


def test_shipped_deepspeed_configs_have_the_stages_their_names_say() -> None:
    from medvlm.distributed import offloads, zero_stage
    from tests.conftest import REPO

    folder = REPO / "recipes" / "deepspeed"
    assert zero_stage(str(folder / "zero2.json")) == 2
    assert zero_stage(str(folder / "zero3.json")) == 3
    assert zero_stage(str(folder / "zero3_offload.json")) == 3
    assert offloads(str(folder / "zero3_offload.json")) == {"optimizer": True, "param": True}
    assert offloads(str(folder / "zero2.json")) == {"optimizer": False, "param": False}


def test_quantization_configs_keep_tower_projector_and_head_by_full_prefix() -> None:
    four = quantization_config(PeftSpec(method="qlora"), torch.bfloat16)
    assert four.load_in_4bit and four.bnb_4bit_quant_type == "nf4" and four.bnb_4bit_use_double_quant
    assert four.bnb_4bit_compute_dtype == torch.bfloat16
    assert four.llm_int8_skip_modules == ["model.vision_tower", "model.multi_modal_projector", "lm_head"]
    eight = quantization_config(PeftSpec(method="qlora", bits=8), torch.float32)
    assert eight.load_in_8bit and not eight.load_in_4bit and eight.llm_int8_skip_modules == list(SKIP_MODULES)
    assert quantization_config(PeftSpec(method="lora"), torch.float32) is None


def test_lora_config_targets_the_language_model_and_saves_the_projector() -> None:
    config = lora_config(PeftSpec(method="lora", r=8, alpha=16), LM_AND_PROJECTOR)
    assert config.r == 8 and config.lora_alpha == 16 and not config.use_dora
    assert config.modules_to_save == ["multi_modal_projector"]
    assert lora_config(PeftSpec(method="lora"), ("language_model",)).modules_to_save is None
    assert lora_config(PeftSpec(method="lora", train_projector=False), LM_AND_PROJECTOR).modules_to_save is None
    assert lora_config(PeftSpec(method="dora"), LM_AND_PROJECTOR).use_dora
    assert lora_config(PeftSpec(method="qlora", dora=True), LM_AND_PROJECTOR).use_dora
