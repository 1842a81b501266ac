"""The shipped general base and its SHA256 manifest."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from medvlm.errors import ModelError
from medvlm.recipe import load_recipe
from medvlm.resources import GENERAL_BASE, MANIFEST, general_base, read_manifest, verify_manifest, write_manifest


def test_manifest_is_sha256sum_format_and_round_trips(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("alpha")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.bin").write_bytes(b"\x00\x01")
    sums = write_manifest(tmp_path)
    alpha, binary = hashlib.sha256(b"alpha").hexdigest(), hashlib.sha256(b"\x00\x01").hexdigest()
    assert (tmp_path / MANIFEST).read_text() == f"{alpha}  a.txt\n{binary}  sub/b.bin\n"
    assert read_manifest(tmp_path) == sums
    assert verify_manifest(tmp_path, "the thing") == tmp_path


def test_a_changed_or_missing_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "weights").write_bytes(b"1234")
    (tmp_path / "config").write_text("{}")
    write_manifest(tmp_path)
    (tmp_path / "weights").write_bytes(b"1235")
    (tmp_path / "config").unlink()
    with pytest.raises(ModelError) as error:
        verify_manifest(tmp_path, "the shipped general base model")
    message = str(error.value)
    assert f"{tmp_path}: the shipped general base model is corrupt" in message
    assert "weights has sha256" in message and "config is missing" in message and "--from-scratch" in message


def test_no_manifest_means_missing(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"is missing \(no SHA256SUMS\)"):
        verify_manifest(tmp_path / "nowhere", "the shipped general base model")


def test_a_malformed_manifest_line_is_named(tmp_path: Path) -> None:
    (tmp_path / MANIFEST).write_text("not a digest\n")
    with pytest.raises(ModelError, match="line 1 is not"):
        read_manifest(tmp_path)


def test_the_shipped_general_base_is_complete_small_and_verified() -> None:
    assert general_base() == GENERAL_BASE
    listed = set(read_manifest(GENERAL_BASE))
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "processor_config.json",
            "chat_template.jinja", "generation_config.json", "build.json"} <= listed
    assert listed == {p.name for p in GENERAL_BASE.iterdir()} - {MANIFEST}
    size = sum(p.stat().st_size for p in GENERAL_BASE.iterdir())
    assert size < 8 * 2**20, f"the shipped base is {size / 2**20:.1f} MiB; keep it a few MB"
    build = json.loads((GENERAL_BASE / "build.json").read_text())
    assert build["recipe"] == "recipes/demo/general_base.yaml" and set(build["stages"]) == {"vision", "base"}
    assert build["train"]["base"]["global_step"] == 1500 and str(GENERAL_BASE) not in json.dumps(build)


def test_a_corrupted_copy_is_refused(tmp_path: Path) -> None:
    copy = shutil.copytree(GENERAL_BASE, tmp_path / "general_base")
    weights = bytearray((copy / "model.safetensors").read_bytes())
    weights[-1] ^= 1
    (copy / "model.safetensors").write_bytes(bytes(weights))
    with pytest.raises(ModelError, match=r"model\.safetensors has sha256"):
        verify_manifest(copy, "the shipped general base model")


def test_recipes_can_name_the_shipped_resources(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: {path: '${medvlm_resources}/general_base'}\n")
    assert load_recipe(recipe).model.path == str(GENERAL_BASE)
