"""Shipped continual recipes validate, and the continual section rejects what it cannot run."""

from __future__ import annotations

import pytest

from medvlm.errors import RecipeError
from medvlm.recipe import load_recipe
from medvlm.runs import is_continual_recipe
from medvlm.runs.continual import method_components, sequence_of
from tests.conftest import REPO

ENV = {name: f"/tmp/{name.lower()}" for name in (
    "MEDVLM_BASE_MODEL", "VQA_RAD_DIR", "SLAKE_DIR", "PATHVQA_DIR", "MEDVLM_GENERAL_PROBE",
    "MEDVLM_TEXT_INQUIRIES", "MEDVLM_RUNS")}


@pytest.mark.parametrize(("path", "method", "guards"), [
    ("recipes/demo/continual.yaml", "sac+uir", ["uir"]),
    ("recipes/continual/medical_vqa_sac_uir.yaml", "sac+uir", ["uir"]),
    ("recipes/demo/continual_guarded.yaml", "sac+uir+replay", ["uir", "replay"]),
])
def test_shipped_continual_recipes_validate(path: str, method: str, guards: list[str], monkeypatch) -> None:
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    assert is_continual_recipe(REPO / path)
    recipe = load_recipe(REPO / path)
    consolidator, components = method_components(sequence_of(recipe), recipe)
    assert recipe.continual.method == method and consolidator == "sac" and [n for n, _ in components] == guards
    assert len(recipe.continual.tasks) == 3 and [p.name for p in recipe.continual.probes] == ["general"]


def test_continual_section_errors_name_the_key(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("continual:\n  method: sac\n  tasks: [{name: a, train: [{dataset: x}], eval: [{dataset: x}]},\n"
                    "          {name: a, train: [{dataset: x}], eval: [{dataset: x}]}]\n  sac: {ratoi: 0.2}\n")
    with pytest.raises(RecipeError) as error:
        load_recipe(path)
    assert "continual.sac.ratoi" in str(error.value) and "did you mean 'ratio'" in str(error.value)
    task = "{name: a, train: [{dataset: llava}], eval: [{dataset: llava}]}"
    path.write_text(f"continual:\n  method: sac\n  tasks: [{task}, {task}]\n")
    with pytest.raises(RecipeError, match="repeated: a"):
        load_recipe(path)
    assert not is_continual_recipe(REPO / "recipes" / "demo" / "pipeline.yaml")
    assert not is_continual_recipe(REPO / "recipes" / "demo" / "pipeline_guarded.yaml")  # a guarded pipeline
