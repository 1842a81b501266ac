"""Guarded pipelines: a curriculum whose stages are continual tasks (teacher = the pre-stage model, SAC on
the components each stage trains, probes after every stage, SAC's ratio swept on held-out data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from medvlm.continual import TaskContext
from medvlm.continual.checkpoints import load_update
from medvlm.continual.sac import decompose, rebuild
from medvlm.errors import DataError, RecipeError
from medvlm.model.build import component_of, load_pretrained
from medvlm.recipe import SacAutoSpec
from medvlm.runs.pipeline import load_pipeline, run_pipeline
from medvlm.runs.ratio import choose_ratio


def _source(synthetic_dir: Path, options: dict, subset: str, split: str, limit: int,
            types: list[str] | None = None) -> dict:
    opts = {"subset": subset, **options, **({"question_types": types} if types else {})}
    return {"dataset": "synthetic", "path": str(synthetic_dir), "split": split, "limit": limit, "options": opts}


def guarded_pipeline(tmp_path: Path, synthetic_dir: Path, options: dict, name: str, **continual) -> Path:
    """micro model; stage 'align' (projector only, plain template, captions) then 'finetune' (VQA)."""
    common = {"model": {"preset": "micro-clip-llama"}, "data": {"max_length": 128, "system_prompt": ""},
              "train": {"learning_rate": 2e-3, "per_device_batch_size": 4, "max_steps": 3, "logging_steps": 1,
                        "save_steps": 1000, "seed": 5, "tensorboard": False}}
    align = {**common, "data": {**common["data"], "template": "plain",
                                "train": [_source(synthetic_dir, options, "medical_caption", "train", 12)]},
             "train": {**common["train"], "stage": "align"}}
    finetune = {**common, "data": {**common["data"],
                                   "train": [_source(synthetic_dir, options, "medical_vqa", "train", 16)]},
                "train": {**common["train"], "stage": "finetune"}}
    (tmp_path / "align.yaml").write_text(yaml.safe_dump(align))
    (tmp_path / "finetune.yaml").write_text(yaml.safe_dump(finetune))
    spec = {
        "name": name,
        "output": {"dir": str(tmp_path / name)},
        "stages": [{"name": "align", "recipe": "align.yaml"},
                   {"name": "finetune", "recipe": "finetune.yaml", **continual.pop("finetune", {})}],
        "eval": {"batch_size": 8, "max_new_tokens": 4},
        "continual": {
            "method": "sac+uir",
            "probes": [{"name": "medical", "eval": [_source(synthetic_dir, options, "medical_vqa", "test", 6)]},
                       {"name": "general", "eval": [_source(synthetic_dir, options, "general_vqa", "test", 6)]}],
            "uir": {"inquiries": [_source(synthetic_dir, options, "general_vqa", "train", 10)], "drop_images": True,
                    "ratio": 0.5},
            "sac": {"ratio": 0.3},
            **continual,
        },
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_stages_run_as_tasks_with_the_pre_stage_teacher_and_sac_on_what_each_stage_trains(
        tmp_path: Path, synthetic_dir: Path, synthetic_options: dict, monkeypatch) -> None:
    teachers: dict[str, dict[str, torch.Tensor]] = {}
    original = TaskContext.teacher

    def recording_teacher(self: TaskContext) -> torch.nn.Module:
        model = original(self)
        teachers.setdefault(self.name, {k: v.detach().clone() for k, v in model.state_dict().items()})
        return model

    monkeypatch.setattr(TaskContext, "teacher", recording_teacher)
    path = guarded_pipeline(tmp_path, synthetic_dir, synthetic_options, "guarded", method="sac+uir+lwf",
                            finetune={"guards": {"skip": ["uir"]}})
    result = run_pipeline(load_pipeline(path))
    out = tmp_path / "guarded"
    record = json.loads((out / "continual.json").read_text())
    assert result.continual == record
    assert record["tasks"] == ["align", "finetune"] and record["probes"] == ["medical", "general"]
    assert len(record["accuracy"]) == 3 and all(len(row) == 2 for row in record["accuracy"])
    # the stages have no probe of their own: only general retention is defined
    a = record["accuracy"]
    assert record["metrics"]["last"] is None and record["metrics"]["bwt"] is None
    assert record["metrics"]["general_retention"] == (pytest.approx(a[2][1] / a[0][1], abs=1e-4) if a[0][1] else None)

    initial = out / "initial" / "model"
    align_dir, finetune_dir = out / "tasks" / "01-align", out / "tasks" / "02-finetune"
    # each stage's teacher (shared by UIR and LwF) is the model before it, weight for weight: θ_0 for
    # align, the consolidated align model (not the one align trained) for finetune
    assert set(teachers) == {"align", "finetune"}
    for name, before_dir in (("align", initial), ("finetune", align_dir / "model")):
        before, _ = load_pretrained(before_dir)
        assert all(torch.equal(teachers[name][k], v) for k, v in before.state_dict().items()), name
    trained_align, _ = load_pretrained(align_dir / "train" / "model")
    assert not all(torch.equal(teachers["finetune"][k], v) for k, v in trained_align.state_dict().items())
    align_task = json.loads((align_dir / "task.json").read_text())
    finetune_task = json.loads((finetune_dir / "task.json").read_text())
    assert set(align_task["guards"]) == {"uir", "lwf"}
    assert set(finetune_task["guards"]) == {"lwf"} and finetune_task["skip"] == ["uir"]  # UIR off for this stage

    # SAC on the projector-only stage: every tensor outside the projector is θ_{t−1} exactly; the
    # projector is θ_{t−1} + SAC(Δ), neither end of the update
    update = load_update(initial, align_dir / "train" / "model")
    consolidated = load_update(initial, align_dir / "model").current
    projector = [k for k in update.previous if component_of(k) == "projector"]
    assert projector and all(torch.equal(consolidated[k], update.previous[k])
                             for k in update.previous if k not in projector)
    weights = [k for k in projector if k.endswith("weight")]
    assert all(not torch.equal(consolidated[k], update.current[k]) for k in weights)
    assert all(not torch.equal(consolidated[k], update.previous[k]) for k in weights)
    saved = json.loads((align_dir / "model" / "consolidation.json").read_text())
    assert saved["components"] == ["projector"] and saved["frozen_changed"] == 0
    assert {component_of(k) for k in saved["tensors"]} == {"projector"}

    # the finetune stage trains from the consolidated align model, and the pipeline's models are θ_t
    resolved = yaml.safe_load((finetune_dir / "train" / "recipe.resolved.yaml").read_text())
    assert resolved["model"]["path"] == str(align_dir / "model")
    assert record["provenance"]["tasks"][1]["model"] == str(finetune_dir / "model")


def test_auto_ratio_holds_out_validation_and_keeps_the_ratio_its_criterion_picks(
        tmp_path: Path, synthetic_dir: Path, synthetic_options: dict) -> None:
    general = [_source(synthetic_dir, synthetic_options, "general_vqa", "train", 6)]
    path = guarded_pipeline(
        tmp_path, synthetic_dir, synthetic_options, "auto", method="sac",
        sac={"ratio": "auto", "auto": {"grid": [0.2, 1.0], "validation_samples": 4, "general": general,
                                       "retention_floor": 0.5}},
        finetune={"guards": {"sac": {"auto": {"metric": "accuracy"}}}})
    tree = yaml.safe_load(path.read_text())
    tree["stages"][0]["guards"] = {"sac": {"auto": {"metric": "loss"}}}  # captions: scored by their loss
    path.write_text(yaml.safe_dump(tree))
    record = run_pipeline(load_pipeline(path)).continual
    assert record is not None and set(record["ratio_sweeps"]) == {"align", "finetune"}
    out = tmp_path / "auto"
    for index, name in ((1, "align"), (2, "finetune")):
        sweep = record["ratio_sweeps"][name]
        assert [row["ratio"] for row in sweep["results"]] == [0.2, 1.0]
        assert sweep["validation_samples"] == 4 and sweep["general_samples"] == 6
        auto = SacAutoSpec(retention_floor=0.5, general=general, metric=sweep["metric"])
        assert sweep["chosen"] == choose_ratio(sweep["results"], auto)
        task = out / "tasks" / f"{index:02d}-{name}"
        report = json.loads((task / "train" / "data_report.json").read_text())
        assert {"source": "held_out", "excluded": 4} in report["sources"]  # never trained on
        # θ_t is the rebuild at the chosen ratio
        previous = out / "initial" / "model" if index == 1 else out / "tasks" / "01-align" / "model"
        update = load_update(previous, task / "train" / "model")
        written = load_update(previous, task / "model").current
        expected = rebuild(update.previous, update.current, decompose(update.previous, update.current),
                           sweep["chosen"])
        assert all(torch.allclose(written[k], expected[k], atol=1e-6) for k in written)
    assert record["ratio_sweeps"]["align"]["metric"] == "loss"
    assert all(row["validation"] < 0 for row in record["ratio_sweeps"]["align"]["results"])  # minus the loss


def test_guard_settings_are_checked_before_anything_trains(tmp_path: Path, synthetic_dir: Path,
                                                           synthetic_options: dict) -> None:
    path = guarded_pipeline(tmp_path, synthetic_dir, synthetic_options, "bad",
                            finetune={"guards": {"skip": ["uri"]}})
    with pytest.raises(RecipeError, match="stage 'finetune': guards.skip names 'uri', .*did you mean 'uir'"):
        load_pipeline(path)
    path = guarded_pipeline(tmp_path, synthetic_dir, synthetic_options, "test-split",
                            sac={"ratio": "auto", "auto": {"general": [
                                _source(synthetic_dir, synthetic_options, "general_vqa", "test", 6)]}})
    with pytest.raises(RecipeError, match="never on a test split"):
        load_pipeline(path)
    assert not (tmp_path / "bad").exists() and not (tmp_path / "test-split").exists()


def test_a_general_validation_set_the_stage_trains_on_is_refused_before_it_trains(
        tmp_path: Path, synthetic_dir: Path, synthetic_options: dict) -> None:
    """General rehearsal and SAC's general validation set cut from one file: retention would be read on
    questions the stage has just learned."""
    general = [_source(synthetic_dir, synthetic_options, "general_vqa", "train", 6)]
    path = guarded_pipeline(tmp_path, synthetic_dir, synthetic_options, "overlap", method="sac",
                            sac={"ratio": "auto", "auto": {"general": general, "validation_samples": 4}})
    align = yaml.safe_load((tmp_path / "align.yaml").read_text())
    align["data"]["train"].append(_source(synthetic_dir, synthetic_options, "general_vqa", "train", 8))
    (tmp_path / "align.yaml").write_text(yaml.safe_dump(align))
    # 5 of the 6: one of them is in the stage's held-out validation slice (4 of its 20 samples), not trained on
    with pytest.raises(DataError, match=r"sac.auto.general shares 5 question\(s\) with the task's training data"):
        run_pipeline(load_pipeline(path))
    assert not list((tmp_path / "overlap").glob("tasks/*/train/model"))  # nothing trained
