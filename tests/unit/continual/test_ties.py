"""The ties consolidator (TIES-style trim of each update) and its recipe section."""

from __future__ import annotations

import pytest
import torch

from medvlm.continual import ConsolidationConfig, get_consolidator
from medvlm.continual.ties import TiesSpec, trim
from medvlm.errors import RecipeError
from medvlm.recipe import load_recipe

TASK = "{name: a, train: [{dataset: llava}], eval: [{dataset: llava}]}"


def test_trim_keeps_the_largest_magnitudes_exactly() -> None:
    delta = torch.tensor([[0.1, -3.0, 0.5], [2.0, -0.2, 0.0]])
    assert trim(delta, 0.3).tolist() == [[0.0, -3.0, 0.0], [2.0, 0.0, 0.0]]  # ⌈0.3·6⌉ = 2 kept
    assert trim(delta, 0.34).tolist() == [[0.0, -3.0, 0.5], [2.0, 0.0, 0.0]]  # ⌈2.04⌉ = 3
    assert trim(delta, 1.0) is delta
    assert trim(torch.arange(1.0, 11.0), 0.3).tolist() == [0.0] * 7 + [8.0, 9.0, 10.0]  # not ⌈3.0000000000000004⌉
    assert int(torch.count_nonzero(trim(torch.ones(10), 0.25))) == 3  # ties at the threshold: exactly ⌈2.5⌉


def test_ties_consolidates_with_its_settings() -> None:
    previous = {"w": torch.zeros(2, 3, dtype=torch.bfloat16), "steps": torch.tensor([1])}
    current = {"w": torch.tensor([[0.5, -4.0, 1.0], [2.0, 0.25, 0.0]], dtype=torch.bfloat16),
               "steps": torch.tensor([7])}
    config = ConsolidationConfig(settings=TiesSpec(density=0.5, scale=0.5))
    state = get_consolidator("ties")(previous, current, config)
    assert state["w"].dtype == torch.bfloat16
    assert state["w"].float().tolist() == [[0.0, -2.0, 0.5], [1.0, 0.0, 0.0]]
    assert state["steps"].tolist() == [7]
    assert config.stats == {"method": "ties", "density": 0.5, "scale": 0.5, "tensors_changed": 1,
                            "entries_kept": 3, "entries": 6}
    # without settings (medvlm consolidate --method ties): TIES' k = 0.2, λ = 1 → ⌈1.2⌉ = 2 of six entries
    state = get_consolidator("ties")(previous, current, ConsolidationConfig())
    assert state["w"].float().tolist() == [[0.0, -4.0, 0.0], [2.0, 0.0, 0.0]]


def test_the_recipe_section_is_validated_by_the_plugin(tmp_path) -> None:
    path = tmp_path / "ties.yaml"
    path.write_text(f"continual:\n  method: ties+lwf\n  tasks: [{TASK}]\n  ties: {{density: 0.3}}\n")
    recipe = load_recipe(path)
    assert recipe.continual.settings("ties") == TiesSpec(density=0.3, scale=1.0)
    assert "  ties:\n    density: 0.3\n    scale: 1.0\n" in recipe.to_yaml()  # the resolved copy records it
    path.write_text(f"continual:\n  method: ties\n  tasks: [{TASK}]\n")
    assert load_recipe(path).continual.settings("ties") == TiesSpec()  # defaults when the section is absent
    assert load_recipe(path, ["continual.ties.scale=0.5"]).continual.settings("ties").scale == 0.5
    path.write_text(f"continual:\n  method: ties\n  tasks: [{TASK}]\n  ties: {{density: 2, sacle: 1}}\n")
    with pytest.raises(RecipeError) as error:
        load_recipe(path)
    assert "key 'continual.ties.density': Input should be less than or equal to 1" in str(error.value)
    assert "unknown key 'continual.ties.sacle' (did you mean 'scale'?)" in str(error.value)
    path.write_text(f"continual:\n  method: sac\n  tasks: [{TASK}]\n  tiez: {{density: 0.3}}\n")
    with pytest.raises(RecipeError, match=r"unknown key 'continual.tiez' \(did you mean 'ties'\?\)"):
        load_recipe(path)
