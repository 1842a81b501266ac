"""sac.ratio auto: the criterion picks the ratio it says on hand-built sweeps; recipe checks."""

from __future__ import annotations

import pytest

from medvlm.data.records import Sample, SampleMeta, Turn
from medvlm.errors import DataError, RecipeError
from medvlm.recipe import DEFAULT_RATIO_GRID, SacAutoSpec, validate
from medvlm.runs.ratio import check_disjoint, choose_ratio, retention

GENERAL = [{"dataset": "synthetic", "split": "train", "options": {"subset": "general_vqa"}}]

# validation accuracy rises with r, general retention falls with it (the usual trade-off)
SWEEP = [
    {"ratio": 0.1, "validation": 40.0, "retention": 0.99},
    {"ratio": 0.3, "validation": 60.0, "retention": 0.95},
    {"ratio": 0.5, "validation": 75.0, "retention": 0.91},
    {"ratio": 0.7, "validation": 80.0, "retention": 0.85},
    {"ratio": 1.0, "validation": 82.0, "retention": 0.60},
]


def test_floor_picks_the_best_validation_score_among_ratios_keeping_enough_general_ability() -> None:
    assert choose_ratio(SWEEP, SacAutoSpec(general=GENERAL, retention_floor=0.9)) == 0.5
    assert choose_ratio(SWEEP, SacAutoSpec(general=GENERAL, retention_floor=0.8)) == 0.7
    assert choose_ratio(SWEEP, SacAutoSpec(general=GENERAL, retention_floor=0.0)) == 1.0
    # no ratio reaches the floor: the one that keeps the most
    assert choose_ratio(SWEEP, SacAutoSpec(general=GENERAL, retention_floor=0.995)) == 0.1


def test_weighted_sum_and_ties() -> None:
    # score = validation + weight·100·retention: w=1 → 0.1: 139, 0.3: 155, 0.5: 166, 0.7: 165, 1.0: 142
    assert choose_ratio(SWEEP, SacAutoSpec(general=GENERAL, criterion="weighted", weight=1.0)) == 0.5
    # w=0.2 → 0.5: 93.2, 0.7: 97, 1.0: 94
    assert choose_ratio(SWEEP, SacAutoSpec(general=GENERAL, criterion="weighted", weight=0.2)) == 0.7
    tied = [{"ratio": 0.2, "validation": 50.0, "retention": 1.0},
            {"ratio": 0.4, "validation": 50.0, "retention": 1.0}]
    assert choose_ratio(tied, SacAutoSpec(general=GENERAL)) == 0.4  # ties keep more of the update
    # loss as the validation metric enters as minus the loss: lower loss wins
    losses = [{"ratio": 0.2, "validation": -2.5, "retention": 1.0},
              {"ratio": 0.6, "validation": -1.9, "retention": 0.95},
              {"ratio": 1.0, "validation": -1.7, "retention": 0.7}]
    assert choose_ratio(losses, SacAutoSpec(general=GENERAL, metric="loss")) == 0.6


def test_retention_is_relative_to_the_initial_model() -> None:
    assert retention(45.0, 90.0) == 0.5
    assert retention(10.0, 0.0) == 1.0  # an initial model that scored 0 had nothing to lose


def test_recipe_checks_for_auto() -> None:
    def recipe(sac: dict) -> dict:
        return {"continual": {"method": "sac", "sac": sac,
                              "tasks": [{"name": "a", "train": GENERAL, "eval": GENERAL}]}}

    spec = validate(recipe({"ratio": "auto", "auto": {"general": GENERAL}}), "r").continual
    assert spec is not None and spec.sac.ratio == "auto" and spec.sac.auto.grid == DEFAULT_RATIO_GRID
    assert DEFAULT_RATIO_GRID == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    with pytest.raises(RecipeError, match="sac.ratio auto needs sac.auto.general"):
        validate(recipe({"ratio": "auto"}), "r")
    with pytest.raises(RecipeError, match="never on a test split"):
        validate(recipe({"ratio": "auto", "auto": {"general": [{**GENERAL[0], "split": "test"}]}}), "r")
    with pytest.raises(RecipeError, match="continual.sac.ratio"):
        validate(recipe({"ratio": "often"}), "r")
    with pytest.raises(RecipeError, match="continual.sac.ratio"):
        validate(recipe({"ratio": 0}), "r")


def test_task_guards_merge_into_the_run_settings() -> None:
    auto = {"general": GENERAL, "grid": [0.2, 0.4]}
    tree = {"continual": {"method": "sac+uir", "sac": {"ratio": "auto", "auto": auto},
                          "tasks": [{"name": "a", "train": GENERAL, "eval": GENERAL,
                                     "guards": {"skip": ["uir"], "sac": {"auto": {"metric": "loss"}}}}]}}
    spec = validate(tree, "r").continual
    assert spec is not None
    merged = spec.sac_for(spec.tasks[0].guards)
    assert merged.auto.metric == "loss" and merged.auto.grid == [0.2, 0.4] and merged.ratio == "auto"
    tree["continual"]["tasks"][0]["guards"] = {"skip": ["ewc"]}  # not used by the method: nothing to skip
    assert validate(tree, "r").continual is not None
    tree["continual"]["tasks"][0]["guards"] = {"skip": ["saq"]}
    with pytest.raises(RecipeError, match="guards.skip names 'saq'.*did you mean 'sac'"):
        validate(tree, "r")
    tree["continual"]["tasks"][0]["guards"] = {"sac": {"ratio": -1}}
    with pytest.raises(RecipeError, match="guards.sac"):
        validate(tree, "r")


def test_a_general_validation_set_sharing_questions_with_a_probe_is_refused() -> None:
    def item(sample_id: str, image: str, question: str, split: str) -> Sample:
        return Sample(id=sample_id, turns=[Turn("user", f"<image>\n{question}"), Turn("assistant", "yes")],
                      meta=SampleMeta(dataset="llava", split=split), images=[image], image_root="/data")

    probe = [item("p1", "a.png", "Is it round?", "test"), item("p2", "b.png", "Is it red?", "test")]
    check_disjoint([item("g1", "a.png", "Is it red?", "validation"), item("g2", "c.png", "Is it round?", "x")],
                   probe)  # same image or same question alone is a different item
    # the same file read under another split label: other ids, same questions
    with pytest.raises(DataError, match=r"shares 1 question\(s\) with the probes \(e.g. g3\)"):
        check_disjoint([item("g3", "b.png", " Is it red? ", "validation")], probe)


def test_a_general_validation_set_sharing_questions_with_the_training_data_is_refused() -> None:
    def item(sample_id: str, image: str, question: str) -> Sample:
        return Sample(id=sample_id, turns=[Turn("user", f"<image>\n{question}"), Turn("assistant", "red")],
                      meta=SampleMeta(dataset="synthetic_general_vqa", split="train"), images=[image],
                      image_root="/data")

    rehearsed = [item("t1", "g1.png", "What colour is it?"), item("t2", "g2.png", "What shape is it?")]
    check_disjoint([item("v1", "g3.png", "What colour is it?")], [], rehearsed)
    # general rehearsal and the sweep's general set cut from one file: retention would read high at any r
    with pytest.raises(DataError, match=r"shares 1 question\(s\) with the task's training data \(e.g. v2\)"):
        check_disjoint([item("v1", "g3.png", "What colour is it?"), item("v2", "g2.png", "What shape is it?")],
                       [], rehearsed)
