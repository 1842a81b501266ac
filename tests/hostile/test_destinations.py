"""Commands that write a directory never delete what they did not write (issue 11, "nothing lost")."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from medvlm.io import MARKER
from tests.hostile.conftest import snapshot


def _someones_folder(path: Path) -> Path:
    (path / "notes").mkdir(parents=True)
    (path / "thesis.tex").write_text("years of work")
    (path / "notes" / "a.txt").write_text("a")
    return path


def _fake_model(path: Path) -> Path:
    """Enough of a model directory for the source to resolve (the destination is checked before loading)."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "llava"}))
    return path


def test_export_into_a_folder_of_someones_files_is_refused(cli, tmp_path: Path) -> None:
    dst = _someones_folder(tmp_path / "dst")
    before = snapshot(dst)
    result = cli("export", _fake_model(tmp_path / "src"), dst)
    result.refused(f"{dst}: exists and holds files medvlm did not write", "--overwrite", within=5)
    assert snapshot(dst) == before


def test_export_into_the_run_itself_or_its_parent_is_refused(cli, tmp_path: Path) -> None:
    run = tmp_path / "runs" / "r1"
    _fake_model(run / "model")
    (run / "recipe.resolved.yaml").write_text("name: r1\n")
    (run / "checkpoints" / "checkpoint-5").mkdir(parents=True)
    (run / "checkpoints" / "checkpoint-5" / "trainer_state.json").write_text("{}")
    (run / "logs").mkdir()
    (run / "logs" / "train.jsonl").write_text('{"loss": 1}\n')
    before = snapshot(tmp_path)
    for dst in (run, run.parent, run / "model"):
        cli("export", run / "model", dst, "--overwrite").refused(f"{dst}: refusing to replace or clear it: it holds",
                                                                 within=5)
    assert snapshot(tmp_path) == before


def test_export_onto_a_file_or_under_a_file_is_refused(cli, tmp_path: Path) -> None:
    src = _fake_model(tmp_path / "src")
    existing = tmp_path / "model.bin"
    existing.write_bytes(b"precious")
    cli("export", src, existing).refused(f"{existing}: exists and is not a directory", within=5)
    cli("export", src, existing / "sub").refused(f"{existing / 'sub'}: cannot be created: {existing} is a file",
                                                 within=5)
    assert existing.read_bytes() == b"precious"


def test_overwrite_replaces_a_folder_only_when_asked_and_reexport_needs_no_flag(cli, tmp_path: Path,
                                                                                micro_model_dir: Path) -> None:
    dst = _someones_folder(tmp_path / "dst")
    cli("export", micro_model_dir, dst).refused("holds files medvlm did not write", within=5)
    assert cli("export", micro_model_dir, dst, "--overwrite").status == 0
    assert (dst / "config.json").is_file() and not (dst / "thesis.tex").exists()
    assert json.loads((dst / MARKER).read_text())["written_by"] == "medvlm"
    assert cli("export", micro_model_dir, dst).status == 0  # its own earlier export: replaced without --overwrite


def test_consolidate_checks_its_output_before_loading_anything(cli, tmp_path: Path) -> None:
    dst = _someones_folder(tmp_path / "dst")
    before = snapshot(tmp_path)
    common = ("consolidate", "--method", "mix", "--previous", tmp_path / "a" / "prev", "--current", tmp_path / "cur")
    cli(*common, "--output", dst).refused(f"{dst}: exists and holds files medvlm did not write", within=3)
    cli(*common, "--output", tmp_path / "a", "--overwrite").refused("refusing to replace or clear it", within=3)
    assert snapshot(tmp_path) == before


def test_consolidating_two_unrelated_models_is_a_clear_error(cli, tmp_path: Path, micro_model_dir: Path) -> None:
    """Tensors are paired by name: a model of another size ended in a KeyError traceback."""
    from medvlm.resources import general_base

    out = tmp_path / "merged"
    cli("consolidate", "--method", "mix", "--previous", general_base(), "--current", micro_model_dir,
        "--output", out).refused(f"{micro_model_dir} is not a finetuned successor of {general_base()}", within=30)
    assert not out.exists()


def _recipe(tmp_path: Path, out: Path, data: Path, **output) -> Path:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"model": {"preset": "micro-clip-llama"},
                                      "data": {"train": [{"dataset": "llava", "path": str(data)}]},
                                      "train": {"max_steps": 1}, "output": {"dir": str(out), **output}}))
    return recipe


def test_training_into_someones_folder_is_refused_and_overwrite_spares_the_inputs(cli, tmp_path: Path) -> None:
    folder = _someones_folder(tmp_path / "work")
    data = folder / "train.json"
    data.write_text("[]")
    before = snapshot(tmp_path)
    cli("train", _recipe(tmp_path, folder, data)).refused(f"{folder}: exists and holds files medvlm did not write",
                                                          "output.overwrite", within=5)
    cli("train", _recipe(tmp_path, folder, data, overwrite=True)).refused(
        f"{folder}: refusing to replace or clear it: it holds {data}", within=5)
    cli("train", _recipe(tmp_path, tmp_path, data, overwrite=True)).refused("refusing to replace or clear it",
                                                                            within=5)
    assert snapshot(tmp_path) == {**before, "r.yaml": snapshot(tmp_path)["r.yaml"]}


def test_synthetic_data_is_never_written_over_someones_folder(cli, tmp_path: Path) -> None:
    folder = _someones_folder(tmp_path / "data")
    before = snapshot(folder)
    cli("data", "synth", "--output", folder, "--image-size", "8").refused(
        f"{folder}: exists and holds other files", within=30)
    assert snapshot(folder) == before


def test_a_file_added_to_an_earlier_export_makes_it_someones_again(cli, tmp_path: Path,
                                                                     micro_model_dir: Path) -> None:
    """Probe F3: re-exporting over an earlier export deleted the notes a user had put in it."""
    dst = tmp_path / "exported"
    assert cli("export", micro_model_dir, dst).status == 0
    assert "config.json" in json.loads((dst / MARKER).read_text())["files"]
    (dst / "MY_NOTES.txt").write_text("what I found")
    cli("export", micro_model_dir, dst).refused(f"{dst}: exists and holds files medvlm did not write", within=10)
    assert (dst / "MY_NOTES.txt").read_text() == "what I found"
    (dst / "MY_NOTES.txt").unlink()
    assert cli("export", micro_model_dir, dst).status == 0  # as medvlm left it: replaced without a flag
