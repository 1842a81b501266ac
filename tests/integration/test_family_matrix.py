"""Every model family through every kind of stage, prediction, and export.

family × {contrastive (tower), align (projector only), instruct with LoRA, finetune with QLoRA
(bitsandbytes on CPU)} on tiny random models; each trained model predicts through the batched
greedy path; each QLoRA run is exported merged and loaded by plain transformers (medvlm blocked
from import) with logits ≤ 1e-4 and the same greedy tokens as medvlm's own trained model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from medvlm.data.collate import load_sample_images, sample_image_sizes
from medvlm.data.sources import read_source
from medvlm.data.templates import get_template
from medvlm.eval.predict import PredictSettings, generate_answers
from medvlm.model.build import collator_for, encoder_for, preparer_for
from medvlm.model.export import export_model, load_for_inference, read_run_recipe
from medvlm.model.families import get_family
from medvlm.recipe import load_recipe
from medvlm.train.stage import run_stage
from tests.helpers.families import FAMILIES

MODES = {
    "contrastive": {"train": {"stage": "contrastive"}, "peft": {"method": "none"}},  # the tiny tower's CLIP step
    "align": {"train": {"stage": "align"}, "peft": {"method": "none"}},
    "instruct-lora": {"train": {"stage": "instruct"}, "peft": {"method": "lora", "r": 4, "alpha": 8, "dropout": 0.0}},
    "finetune-qlora": {"train": {"stage": "finetune"}, "peft": {"method": "qlora", "r": 4, "alpha": 8,
                                                                  "dropout": 0.0}},
}


@pytest.fixture(scope="module")
def family_run(tmp_path_factory, synthetic_dir: Path, synthetic_options: dict):
    """Runs a (family, mode) stage once per module."""
    root = tmp_path_factory.mktemp("families")
    done: dict[tuple[str, str], Path] = {}

    def run(family: str, mode: str) -> Path:
        if (family, mode) not in done:
            name = f"{family}-{mode}"
            spec = {
                "name": name,
                "model": {"preset": "micro-clip-llama", "family": family},
                "data": {"train": [{"dataset": "synthetic", "path": str(synthetic_dir), "split": "train", "limit": 8,
                                    "options": {"subset": "medical_vqa", **synthetic_options}}],
                         "max_length": 128, "system_prompt": "", "template": get_family(family).default_template},
                "train": {"learning_rate": 2e-3, "per_device_batch_size": 4, "max_steps": 2, "save_steps": 100,
                          "logging_steps": 1, "seed": 5, "tensorboard": False, **MODES[mode]["train"]},
                "peft": MODES[mode]["peft"],
                "output": {"dir": str(root / name)},
            }
            path = root / f"{name}.yaml"
            path.write_text(yaml.safe_dump(spec))
            done[(family, mode)] = run_stage(load_recipe(path)).output_dir
        return done[(family, mode)]

    return run


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("family", FAMILIES)
def test_stage_trains_the_right_parts_and_the_model_predicts(family: str, mode: str, family_run,
                                                             synthetic_dir: Path, synthetic_options: dict) -> None:
    out = family_run(family, mode)
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["global_step"] == 2 and summary["train_loss"] == summary["train_loss"]  # finite, not NaN
    if mode == "contrastive":
        assert set(summary["trainable"]) == {"vision_tower"}
    elif mode == "align":
        assert set(summary["trainable"]) == {"projector"}
    else:
        assert set(summary["trainable"]) == {"projector", "language_model"}
        assert (out / "adapter" / "adapter_config.json").is_file()
    model, processor = load_for_inference(out)
    assert model.config.model_type == family
    samples, _ = read_source("synthetic", str(synthetic_dir), "test", limit=3,
                             subset="medical_vqa", **synthetic_options)
    recipe = read_run_recipe(out)
    settings = PredictSettings(template=recipe.data.template, batch_size=2, max_new_tokens=4, system_prompt="")
    rows = generate_answers(model, processor, samples, settings, show_progress=False)
    assert len(rows) == 3 and all(isinstance(row["text"], str) for row in rows)


# In a fresh interpreter where medvlm cannot be imported: the Auto classes alone load each export.
PLAIN = textwrap.dedent('''
    import sys

    class NoMedvlm:
        def find_spec(self, name, path=None, target=None):
            if name == "medvlm" or name.startswith("medvlm."):
                raise ImportError("medvlm is blocked in this process")

    sys.meta_path.insert(0, NoMedvlm())
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForImageTextToText

    for source, inputs_file, out in zip(sys.argv[1::3], sys.argv[2::3], sys.argv[3::3]):
        model = AutoModelForImageTextToText.from_pretrained(source).eval()
        inputs = load_file(inputs_file)
        with torch.no_grad():
            logits = model(**inputs).logits
            tokens = model.generate(**inputs, max_new_tokens=5, do_sample=False)
        save_file({"logits": logits.contiguous(), "tokens": tokens.contiguous()}, out)
''')


def own_model_and_inputs(run: Path, synthetic_dir: Path, synthetic_options: dict):
    """medvlm's trained model (quantised base + unmerged adapter, as it trained) and one prompt's
    inputs, encoded and collated as medvlm's prediction does."""
    from peft import PeftModel

    from medvlm.model.build import DTYPES, load_model
    from medvlm.model.quant import quantization_config

    recipe = read_run_recipe(run)
    base, processor = load_model(recipe.model, template=recipe.data.template,
                                 quantization=quantization_config(recipe.peft, DTYPES[recipe.model.dtype]))
    own = PeftModel.from_pretrained(base, str(run / "adapter"))
    samples, _ = read_source("synthetic", str(synthetic_dir), "test", limit=1, subset="medical_vqa",
                             **synthetic_options)
    sample, config = samples[0], own.config
    encoder = encoder_for(config, processor, get_template(recipe.data.template), 4096, "")
    preparer = preparer_for(config, processor, recipe.data.image_aspect_ratio)
    ids = encoder.encode_prompt(sample, sample_image_sizes(sample, preparer))
    item = {"input_ids": torch.tensor(ids), **load_sample_images(sample, preparer)}
    return own, collator_for(config, processor, padding_side="left")([item])


@pytest.fixture(scope="module")
def exports(family_run, tmp_path_factory, synthetic_dir: Path, synthetic_options: dict):
    """Each family's QLoRA run exported merged; medvlm's outputs and plain transformers' (one process)."""
    tmp = tmp_path_factory.mktemp("family_exports")
    ours, argv = {}, []
    for family in FAMILIES:
        run = family_run(family, "finetune-qlora")
        dst = export_model(run, tmp / family, merge_lora=True)
        own, inputs = own_model_and_inputs(run, synthetic_dir, synthetic_options)
        own.train()  # dropout is 0; bitsandbytes' CPU training path is its reference path
        with torch.no_grad():
            logits = own(**inputs).logits
            own.eval()
            tokens = own.generate(**inputs, max_new_tokens=5, do_sample=False)
        ours[family] = (dst, logits, tokens)
        save_file({k: v.contiguous() for k, v in inputs.items()}, tmp / f"{family}.inputs.safetensors")
        argv += [str(dst), str(tmp / f"{family}.inputs.safetensors"), str(tmp / f"{family}.plain.safetensors")]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", PLAIN, *argv], cwd=tmp, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return {family: (*ours[family], load_file(tmp / f"{family}.plain.safetensors")) for family in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES)
def test_qlora_export_round_trip_in_plain_transformers(family: str, exports) -> None:
    import transformers

    dst, logits, tokens, plain = exports[family]
    # the saved processor names transformers' own class (never medvlm's image-only stand-in)
    processor_class = json.loads((dst / "processor_config.json").read_text())["processor_class"]
    assert processor_class.endswith("Processor") and hasattr(transformers, processor_class)
    difference = float((logits - plain["logits"]).abs().max())
    print(f"{family}: export max |dlogit| = {difference:.2e}")
    assert difference <= 1e-4
    assert torch.equal(tokens, plain["tokens"])
