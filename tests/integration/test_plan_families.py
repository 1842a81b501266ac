"""The memory planner per model family: within 15 % of the measured CPU peak of each family's tiny
model (full finetuning, LoRA, QLoRA), with shapes, components and image tokens from the family."""

from __future__ import annotations

import pytest

from medvlm.model.plan import plan_memory
from medvlm.recipe import Recipe
from medvlm.train.memtrack import measure_training_peak
from tests.helpers.families import FAMILIES

CASES = {
    "full": {"peft": {"method": "none"}},
    "lora": {"peft": {"method": "lora", "r": 8, "alpha": 16, "dropout": 0.05}},
    "qlora": {"peft": {"method": "qlora", "r": 8, "alpha": 16, "dropout": 0.0}},
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("family", FAMILIES)
def test_plan_is_within_15_percent_of_the_measured_peak(family: str, case: str) -> None:
    recipe = Recipe.model_validate({
        "model": {"preset": "tiny-clip-llama", "family": family}, "data": {"max_length": 192},
        "train": {"per_device_batch_size": 2, "stage": "finetune"}, **CASES[case]})
    planned, measured = plan_memory(recipe).total, measure_training_peak(recipe)
    print(f"plan/measured {family} {case}: {planned / measured:.3f} ({planned:,} / {measured:,} bytes)")
    assert 0.85 <= planned / measured <= 1.15, f"{family} {case}: planned {planned:,} vs measured {measured:,}"
