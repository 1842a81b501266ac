"""Shipped family recipes: the LLaVA-Med variants keep LLaVA-Med's settings and take the family's
input settings; every family's demo pipeline builds that family's tiny model in its first stage."""

from __future__ import annotations

import pytest

from medvlm.model.families import family_names
from medvlm.recipe import load_recipe
from medvlm.runs.pipeline import load_pipeline
from tests.conftest import REPO

VARIANTS = {"next": ("llava_next", "vicuna_v1"), "qwen2_5_vl": ("qwen2_5_vl", "chatml")}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_llava_med_variants(variant: str, monkeypatch) -> None:
    for var in ("MEDVLM_BASE_MODEL", "LLAVA_MED_DATA", "MEDVLM_RUNS", "VQA_RAD_DIR"):
        monkeypatch.setenv(var, f"/local/{var.lower()}")
    family, template = VARIANTS[variant]
    folder = REPO / "recipes" / "llava_med" / variant
    align = load_recipe(folder / "stage1_align.yaml")
    assert (align.model.family, align.data.template, align.train.learning_rate) == (family, "plain", 2e-3)
    assert align.output.dir == f"/local/medvlm_runs/llava_med_{variant}/stage1_align"
    for stage in ("stage2_instruct.yaml", "stage3_vqa_rad.yaml"):
        recipe = load_recipe(folder / stage)
        assert (recipe.model.family, recipe.data.template, recipe.data.image_aspect_ratio) == (family, template,
                                                                                                "native")
        assert recipe.data.max_length == 4096 and recipe.train.learning_rate == 2e-5
    pipeline = load_pipeline(folder / "pipeline.yaml")
    assert [name for name, _ in pipeline.stages] == ["align", "instruct", "vqa_rad"]
    assert pipeline.stages[0][1].model.path == "/local/medvlm_base_model"


@pytest.mark.parametrize("family", [name for name in family_names() if name != "llava"])
def test_family_demo_pipelines(family: str) -> None:
    pipeline = load_pipeline(REPO / "recipes" / "demo" / "families" / f"{family}.yaml", ["output.dir=/tmp/x"])
    assert [stage for stage, _ in pipeline.stages] == ["vision", "base", "align", "instruct", "finetune"]
    first = pipeline.stages[0][1].model
    assert (first.family, first.preset) == (family, "tiny-clip-llama")
    assert pipeline.stages[1][1].model.path == "/tmp/x/vision/model"
    assert pipeline.stages[2][1].data.template == "plain"
