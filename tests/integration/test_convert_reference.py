"""convert-llava against the ORIGINAL LLaVA code: same token ids, logits within 1e-4 at every position.

``tests/reference/original_llava.py`` runs in a virtual environment holding the original code
(``scripts/reference_venv.sh`` builds it; ``MEDVLM_LLAVA_REFERENCE`` names its python), writes tiny
random checkpoints in the original format and the original code's ids and logits for prompts built
the original way. Here each checkpoint is converted and prompted twice, through the saved chat
template with plain transformers and through medvlm's own prompt building, on the original's pixels.
Skipped when that environment is absent.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from PIL import Image

from medvlm.data.records import Sample, SampleMeta, Turn

REPO = Path(__file__).resolve().parents[2]
REFERENCE_PYTHON = os.environ.get("MEDVLM_LLAVA_REFERENCE", "")
ORIGINAL_IMAGE_TOKEN = -200
KINDS = ("llama_linear", "llama_mlp2x_gelu", "mistral_mlp2x_gelu", "next_llama")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(REFERENCE_PYTHON or "/nonexistent").is_file(),
                       reason="MEDVLM_LLAVA_REFERENCE does not name the original LLaVA code's python "
                              "(build it with scripts/reference_venv.sh)"),
]


@pytest.fixture(scope="module")
def reference_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("original-llava")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
    subprocess.run([REFERENCE_PYTHON, str(REPO / "tests" / "reference" / "original_llava.py"), str(out)],
                   check=True, env=env, capture_output=True, timeout=600)
    return out


def collapse_image_tokens(ids: list[int], image_token_id: int) -> list[int]:
    """The original's ids have one -200 where the converted ids have a run of image tokens."""
    out: list[int] = []
    for token in ids:
        if token == image_token_id:
            if not out or out[-1] != ORIGINAL_IMAGE_TOKEN:
                out.append(ORIGINAL_IMAGE_TOKEN)
        else:
            out.append(token)
    return out


def messages(name: str) -> list[dict]:
    first = [{"type": "image"}, {"type": "text", "text": "What does the chest x-ray show?"
                                 if name == "single" else "Is there a lesion?"}]
    if name == "single":
        return [{"role": "user", "content": first}]
    return [{"role": "user", "content": first}, {"role": "assistant", "content": "yes, in the left lung"},
            {"role": "user", "content": "Is there an effusion?"}]


def turns(name: str) -> list[Turn]:
    return [Turn("user" if m["role"] == "user" else "assistant",
                 m["content"] if isinstance(m["content"], str) else "<image>\n" + m["content"][1]["text"])
            for m in messages(name)]


@pytest.mark.parametrize("kind", KINDS)
def test_converted_checkpoint_reproduces_the_original_code(reference_dir: Path, tmp_path: Path, kind: str) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from medvlm.data.collate import ConversationEncoder
    from medvlm.data.templates import get_template
    from medvlm.model.build import num_image_tokens
    from medvlm.model.convert import convert_llava
    from medvlm.model.prompting import read_trained_prompt

    reference = torch.load(reference_dir / kind / "reference.pt", weights_only=True)
    dst = tmp_path / "converted"
    convert_llava(reference_dir / kind / "checkpoint", dst)
    model = AutoModelForImageTextToText.from_pretrained(dst).eval()
    processor = AutoProcessor.from_pretrained(dst)
    tokenizer = processor.tokenizer
    image_token_id = model.config.image_token_id
    prompt = read_trained_prompt(dst)
    assert prompt is not None and prompt.template == reference["template"]
    pixels = reference["pixel_values"]
    width, height = reference["image_size"]
    next_ = kind.startswith("next")
    vocab = reference["prompts"]["single"]["logits"].shape[-1]

    for name, original in reference["prompts"].items():
        # 1. plain transformers: the saved chat template, the saved processor
        text = processor.apply_chat_template(messages(name), add_generation_prompt=True)
        gap = " " if kind != "mistral_mlp2x_gelu" else ""  # a non-legacy tokenizer needs the gap
        assert text == tokenizer.bos_token + gap + original["text"].replace("<image>", "<image>" + gap), name
        # (an image of the same size: a NeXT processor counts the AnyRes image tokens from it)
        # (the template writes the bos token itself)
        encoded = processor(text=[text], images=[Image.new("RGB", (width, height))], add_special_tokens=False,
                            return_tensors="pt")
        ids = encoded["input_ids"][0].tolist()
        assert collapse_image_tokens(ids, image_token_id) == original["ids"], \
            (name, tokenizer.convert_ids_to_tokens(ids))

        # 2. medvlm's own prompt building (training and predict), for the fixed-size llava layout
        if not next_:
            encoder = ConversationEncoder(tokenizer, get_template(prompt.template), num_image_tokens(model.config),
                                          max_length=4096, system_prompt=prompt.system_prompt)
            sample = Sample(id=name, turns=turns(name), meta=SampleMeta(dataset="t", split="test"),
                            images=["x.png"])
            assert encoder.encode_prompt(sample) == ids, name

        # 3. logits on the original's pixels, every position of the expanded sequence
        inputs = {"input_ids": torch.tensor([ids]), "pixel_values": pixels}
        if next_:
            inputs["image_sizes"] = torch.tensor([[height, width]])
        with torch.no_grad():
            logits = model(**inputs).logits[0, :, :vocab]
        assert logits.shape == original["logits"].shape, name
        difference = (logits - original["logits"]).abs().max().item()
        print(json.dumps({"kind": kind, "prompt": name, "tokens": len(ids), "max_logit_difference": difference}))
        assert difference <= 1e-4, (name, difference)
