"""``medvlm export``: plain transformers (medvlm blocked from import) reproduces medvlm's own model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from medvlm.cli import main
from medvlm.errors import ModelError
from medvlm.model.export import export_model, read_run_recipe
from medvlm.recipe import load_recipe
from medvlm.train.stage import run_stage
from tests.integration.test_peft_checkpoints import write_recipe

QUESTION = "Is there a lesion?"
NEW_TOKENS = 6

# Runs with medvlm made unimportable: proves the export needs nothing but transformers (+ peft for
# adapter exports), and no trust_remote_code.
PLAIN_TRANSFORMERS = textwrap.dedent('''
    import sys

    class NoMedvlm:
        def find_spec(self, name, path=None, target=None):
            if name == "medvlm" or name.startswith("medvlm."):
                raise ImportError("medvlm is blocked in this process")

    sys.meta_path.insert(0, NoMedvlm())
    import torch
    from PIL import Image
    from safetensors.torch import save_file
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    question, new_tokens = sys.argv[1], int(sys.argv[2])
    for source, out in zip(sys.argv[3::2], sys.argv[4::2]):
        model = LlavaForConditionalGeneration.from_pretrained(source).eval()
        processor = AutoProcessor.from_pretrained(source)
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
        image = Image.new("RGB", (20, 20), (120, 30, 200))
        inputs = processor(text=[prompt], images=[image], return_tensors="pt")
        with torch.no_grad():
            logits = model(**inputs).logits
            tokens = model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False)
        save_file({"logits": logits.contiguous(), "tokens": tokens.contiguous(),
                   "input_ids": inputs["input_ids"].contiguous()}, out)
''')


def plain_transformers(sources: dict[str, Path], tmp_path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Load each exported directory in one fresh interpreter where medvlm cannot be imported."""
    script = tmp_path / "load_plain.py"
    script.write_text(PLAIN_TRANSFORMERS)
    outs = {name: tmp_path / f"{name}.plain.safetensors" for name in sources}
    pairs = [str(x) for name in sources for x in (sources[name], outs[name])]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, str(script), QUESTION, str(NEW_TOKENS), *pairs],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return {name: load_file(out) for name, out in outs.items()}


def own_outputs(model, processor, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """medvlm's model on the exact token ids the exported processor produced."""
    pixels = processor.image_processor(images=[Image.new("RGB", (20, 20), (120, 30, 200))],
                                       return_tensors="pt")["pixel_values"]
    inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "pixel_values": pixels}
    with torch.no_grad():
        logits = model(**inputs).logits
        tokens = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False,
                                pad_token_id=processor.tokenizer.pad_token_id)
    return logits, tokens


def trained_adapter_model(run_dir: Path):
    """The adapted model as medvlm trained it: base (quantised as in training) + unmerged adapter."""
    from peft import PeftModel

    from medvlm.model.build import DTYPES, load_model
    from medvlm.model.quant import quantization_config

    recipe = read_run_recipe(run_dir)
    base, processor = load_model(recipe.model, template=recipe.data.template,
                                 quantization=quantization_config(recipe.peft, DTYPES[recipe.model.dtype]))
    model = PeftModel.from_pretrained(base, str(run_dir / "adapter"))
    model.train()  # dropout is 0 here; bitsandbytes' CPU training path is its reference path
    return model, processor


@pytest.fixture(scope="module")
def runs(tmp_path_factory, synthetic_dir: Path, synthetic_options: dict) -> dict[str, Path]:
    from medvlm.model.tiny import build_tiny

    tmp = tmp_path_factory.mktemp("export_runs")
    base_dir = tmp / "base_model"
    model, processor = build_tiny("micro-clip-llama", seed=1)
    model.save_pretrained(base_dir)
    processor.save_pretrained(base_dir)
    specs = {
        "lora": dict(peft={"method": "lora", "dropout": 0.0}, model={"path": str(base_dir)}),
        "qlora": dict(peft={"method": "qlora", "dropout": 0.0}),
        "full": dict(peft={"method": "none"}),
    }
    return {name: run_stage(load_recipe(write_recipe(tmp, synthetic_dir, synthetic_options, name, max_steps=3,
                                                     save_steps=100, **spec))).output_dir
            for name, spec in specs.items()}


@pytest.fixture(scope="module")
def exports(runs, tmp_path_factory) -> dict[str, tuple[Path, dict[str, torch.Tensor]]]:
    """Every run exported merged (through the CLI), plus the LoRA run as an adapter; then loaded plainly."""
    tmp = tmp_path_factory.mktemp("exports")
    targets = {}
    for kind, run_dir in runs.items():
        targets[kind] = tmp / kind
        assert main(["export", str(run_dir), str(targets[kind]), "--merge-lora"]) == 0
    targets["lora-adapter"] = export_model(runs["lora"], tmp / "lora-adapter")
    plain = plain_transformers(targets, tmp)
    return {kind: (targets[kind], plain[kind]) for kind in targets}


@pytest.mark.parametrize("kind", ["lora", "qlora", "full"])
def test_exported_model_matches_medvlm_without_medvlm(kind: str, runs, exports) -> None:
    run_dir = runs[kind]
    dst, plain = exports[kind]
    assert not (dst / "adapter_config.json").exists() and (dst / "chat_template.jinja").is_file()
    assert "quantization_config" not in json.loads((dst / "config.json").read_text())
    if kind == "full":
        from medvlm.model.build import load_pretrained

        own, processor = load_pretrained(run_dir / "model")
        own.eval()
    else:
        own, processor = trained_adapter_model(run_dir)
    logits, tokens = own_outputs(own, processor, plain["input_ids"])
    assert float((logits - plain["logits"]).abs().max()) <= 1e-4
    assert torch.equal(tokens, plain["tokens"])
    # and the prompt the chat template rendered is medvlm's own vicuna_v1 layout
    text = processor.tokenizer.decode(plain["input_ids"][0])
    assert text.endswith(f"USER: {'<image>' * 4}\n{QUESTION} ASSISTANT:"), text


def test_adapter_export_loads_onto_its_base_in_plain_transformers(runs, exports) -> None:
    dst, plain = exports["lora-adapter"]
    config = json.loads((dst / "adapter_config.json").read_text())
    assert Path(config["base_model_name_or_path"]) == (runs["lora"].parent / "base_model").resolve()
    assert not (dst / "model.safetensors").exists()
    own, processor = trained_adapter_model(runs["lora"])
    logits, tokens = own_outputs(own, processor, plain["input_ids"])
    assert float((logits - plain["logits"]).abs().max()) <= 1e-4
    assert torch.equal(tokens, plain["tokens"])


def test_exporting_a_checkpoint(runs, tmp_path: Path) -> None:
    """Checkpoints export like finished runs (here the last one equals the final model)."""
    from medvlm.model.build import load_pretrained

    checkpoint = runs["qlora"] / "checkpoints" / "checkpoint-3"
    export_model(checkpoint, tmp_path / "from_checkpoint", merge_lora=True)
    a, _ = load_pretrained(tmp_path / "from_checkpoint")
    b, _ = load_pretrained(runs["qlora"] / "model")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_export_errors_are_clear(runs, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="tiny preset 'micro-clip-llama'.*--merge-lora"):
        export_model(runs["qlora"], tmp_path / "x")
    with pytest.raises(ModelError, match="not a directory"):
        export_model(tmp_path / "missing", tmp_path / "y")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "recipe.resolved.yaml").write_text((runs["full"] / "recipe.resolved.yaml").read_text())
    with pytest.raises(ModelError, match="did not finish"):
        export_model(unfinished, tmp_path / "z")
    assert main(["export", str(tmp_path / "missing"), str(tmp_path / "w")]) == 2


def test_the_trained_prompt_travels_with_the_export(runs, exports, tmp_path: Path) -> None:
    """The runs train with system_prompt "": the export says so and its chat template renders no system."""
    from transformers import AutoProcessor

    from medvlm.model.export import prompt_settings
    from medvlm.model.prompting import read_trained_prompt

    for kind in ("full", "lora", "lora-adapter"):
        dst, _ = exports[kind]
        assert json.loads((dst / "prompt.json").read_text()) == {"template": "vicuna_v1", "system_prompt": ""}
        processor = AutoProcessor.from_pretrained(dst)
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
        assert processor.apply_chat_template(messages, add_generation_prompt=True) == \
            f"<s>USER: <image>\n{QUESTION} ASSISTANT:"
    assert read_trained_prompt(runs["full"] / "model") == read_trained_prompt(exports["full"][0])
    # predict: the trained prompt unless told otherwise; another template brings its own default
    dst = exports["full"][0]
    assert prompt_settings(dst, None, None) == ("vicuna_v1", "")
    assert prompt_settings(dst, None, "Be brief.") == ("vicuna_v1", "Be brief.")
    assert prompt_settings(dst, "mistral_instruct", None) == ("mistral_instruct", None)


def test_a_bad_prompt_record_is_a_clear_error(tmp_path: Path) -> None:
    from medvlm.model.prompting import read_trained_prompt

    (tmp_path / "prompt.json").write_text(json.dumps({"template": "vicuna_v9", "system_prompt": None}))
    with pytest.raises(ModelError, match="vicuna_v9"):
        read_trained_prompt(tmp_path)
    (tmp_path / "prompt.json").write_text(json.dumps({"template": "vicuna_v1", "system_prompt": 3}))
    with pytest.raises(ModelError, match="system_prompt"):
        read_trained_prompt(tmp_path)
