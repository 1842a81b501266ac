"""Bad input at the command line: exit status 2 and a message naming file, record and key."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from medvlm.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medvlm", *args], capture_output=True, text=True, timeout=300)


def test_missing_recipe_exits_2(capsys, tmp_path: Path) -> None:
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("medvlm: error: ") and "missing.yaml: recipe file not found" in last


def test_unknown_override_exits_2(capsys, tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"model": {"preset": "micro-clip-llama"}}))
    assert main(["train", str(recipe), "train.learnin_rate=1"]) == 2
    assert "did you mean 'learning_rate'" in capsys.readouterr().err


def test_corrupt_data_file_exits_2_without_traceback(tmp_path: Path) -> None:
    data = tmp_path / "train.json"
    data.write_text('[{"id": "q1", "conversations": [')
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"model": {"preset": "micro-clip-llama"},
                                      "data": {"train": [{"dataset": "llava", "path": str(data)}]},
                                      "output": {"dir": str(tmp_path / "out")}}))
    result = run_cli("train", str(recipe))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{data}: not valid JSON at line 1" in result.stderr


def test_missing_image_exits_2_naming_the_record(tmp_path: Path) -> None:
    data = tmp_path / "train.json"
    data.write_text(json.dumps([{"id": "q42", "image": "gone.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "x"}]}]))
    result = run_cli("predict", "--model", str(tmp_path / "no-model"), "--dataset", "llava", "--path", str(data),
                     "--output", str(tmp_path / "a.jsonl"))  # the data is checked before any model loads
    assert result.returncode == 2 and f"{data}: record q42: key 'image': image file not found" in result.stderr
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"model": {"preset": "micro-clip-llama"},
                                      "data": {"train": [{"dataset": "llava", "path": str(data)}]},
                                      "train": {"max_steps": 1, "per_device_batch_size": 1},
                                      "output": {"dir": str(tmp_path / "out")}}))
    result = run_cli("train", str(recipe))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "record q42" in result.stderr and "key 'image'" in result.stderr and "gone.png" in result.stderr


def test_unknown_dataset_name_suggests_one(capsys, tmp_path: Path) -> None:
    assert main(["score", "--dataset", "synthetc", "--path", str(tmp_path), "--predictions", "x",
                 "--output", str(tmp_path / "s.json")]) == 2
    assert "did you mean 'synthetic'" in capsys.readouterr().err
