"""Reference outputs of the ORIGINAL LLaVA code for tiny random checkpoints in its own format.

Runs ONLY in a virtual environment holding the original code (``llava-torch==1.2.2.post1`` on
``transformers==4.36.2``, CPU torch), never in medvlm's environment; the slow test
``tests/integration/test_convert_reference.py`` runs it there and compares ``medvlm convert-llava``
against what it writes. Build that environment once with ``scripts/reference_venv.sh``.

For each checkpoint kind it writes, under ``OUT/<kind>/``:

* ``checkpoint/`` — an original-format checkpoint (``LlavaLlamaForCausalLM`` /
  ``LlavaMistralForCausalLM`` ``save_pretrained``) with a sentencepiece ``tokenizer.model`` only
  (no ``tokenizer.json``, as LLaVA-1.5 ships), ``mm_vision_tower`` naming the tiny local CLIP tower;
* ``reference.pt`` — per prompt: the prompt text built with the original conversation template,
  the ids ``tokenizer_image_token`` gives (``-200`` marks the image), the pixel values
  ``process_images`` gives, and the original model's float32 logits at every position of the
  expanded (text + image features) sequence.

The model is loaded the way ``llava.model.builder.load_pretrained_model`` does (slow tokenizer,
``from_pretrained``, ``vision_tower.load_model()``) but in float32: the builder forces float16,
whose rounding would hide a 1e-4 comparison.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import sentencepiece as spm
import torch
from llava.constants import DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX
from llava.conversation import conv_templates
from llava.mm_utils import process_images, tokenizer_image_token
from llava.model import LlavaLlamaForCausalLM, LlavaMistralForCausalLM
from llava.model.language_model.llava_llama import LlavaConfig
from llava.model.language_model.llava_mistral import LlavaMistralConfig
from PIL import Image
from transformers import AutoTokenizer, CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

MM_HIDDEN, TEXT_HIDDEN, TOWER_SIZE, PATCH = 32, 64, 32, 8
CORPUS = [
    "A chat between a curious user and an artificial intelligence assistant.",
    "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    "A chat between a curious human and an artificial intelligence assistant.",
    "USER: ASSISTANT: [INST] [/INST] ### Human: Assistant:",
    "What does the chest x-ray show? Is there a lesion in the left lung?",
    "The image shows a small nodule in the right upper lobe. No effusion is seen.",
    "Answer the question using a single word or phrase. yes no",
    "Please choose from the following two options: [yes, no]",
] * 4

# name → (text model, projector, conversation template, extra config fields, tokenizer_config "legacy")
KINDS: dict[str, tuple[str, str, str, dict, bool | None]] = {
    # LLaVA-1.5 7B layout; rope_scaling exercises the scaled rotary embedding path
    "llama_linear": ("llama", "linear", "vicuna_v1",
                     {"image_aspect_ratio": "pad", "rope_scaling": {"type": "linear", "factor": 2.0}}, False),
    "llama_mlp2x_gelu": ("llama", "mlp2x_gelu", "vicuna_v1", {"image_aspect_ratio": "pad"}, False),
    # LLaVA-Med v1.5 layout: Mistral, rope base 1e6, no "legacy" key (the slow tokenizer then is legacy)
    "mistral_mlp2x_gelu": ("mistral", "mlp2x_gelu", "mistral_instruct",
                           {"image_aspect_ratio": "pad", "rope_theta": 1000000.0, "sliding_window": None}, None),
    # LLaVA-NeXT (v1.6) layout: AnyRes tiles, unpadded, an image_newline after each row
    "next_llama": ("llama", "mlp2x_gelu", "vicuna_v1",
                   {"image_aspect_ratio": "anyres", "mm_patch_merge_type": "spatial_unpad",
                    "image_grid_pinpoints": [[32, 64], [64, 32], [64, 64]]}, False),
}


def train_tokenizer(out: Path) -> Path:
    """A Llama-style sentencepiece BPE model (byte fallback, dummy prefix, <unk>/<s>/</s> = 0/1/2)."""
    out.mkdir(parents=True, exist_ok=True)
    corpus = out / "corpus.txt"
    corpus.write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(out / "tokenizer"), model_type="bpe", vocab_size=400,
        byte_fallback=True, add_dummy_prefix=True, remove_extra_whitespaces=False, split_digits=True,
        normalization_rule_name="identity", unk_id=0, bos_id=1, eos_id=2, pad_id=-1, character_coverage=1.0,
        minloglevel=2)
    corpus.unlink()
    (out / "tokenizer.vocab").unlink()
    return out / "tokenizer.model"


def write_tower(out: Path) -> Path:
    torch.manual_seed(1)
    tower = CLIPVisionModel(CLIPVisionConfig(hidden_size=MM_HIDDEN, intermediate_size=64, num_hidden_layers=3,
                                             num_attention_heads=4, image_size=TOWER_SIZE, patch_size=PATCH,
                                             projection_dim=MM_HIDDEN))
    tower.save_pretrained(out)
    CLIPImageProcessor(size={"shortest_edge": TOWER_SIZE},
                       crop_size={"height": TOWER_SIZE, "width": TOWER_SIZE}).save_pretrained(out)
    return out


def write_checkpoint(out: Path, kind: str, tokenizer_model: Path, tower: Path) -> None:
    text, projector, _, extra, legacy = KINDS[kind]
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.model").write_bytes(tokenizer_model.read_bytes())
    tokenizer_config = {"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False,
                        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>",
                        "model_max_length": 2048, "padding_side": "right", "clean_up_tokenization_spaces": False}
    if legacy is not None:
        tokenizer_config["legacy"] = legacy
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2), encoding="utf-8")
    vocab = spm.SentencePieceProcessor(model_file=str(tokenizer_model)).vocab_size()
    common = dict(vocab_size=vocab, hidden_size=TEXT_HIDDEN, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False,
                  mm_vision_tower=str(tower), mm_hidden_size=MM_HIDDEN, mm_vision_select_layer=-2,
                  mm_vision_select_feature="patch", mm_projector_type=projector, mm_use_im_start_end=False,
                  mm_use_im_patch_token=False, mm_patch_merge_type="flat", tokenizer_padding_side="right",
                  use_mm_proj=True)
    common.update(extra)
    config_cls, model_cls = ((LlavaConfig, LlavaLlamaForCausalLM) if text == "llama"
                             else (LlavaMistralConfig, LlavaMistralForCausalLM))
    torch.manual_seed(0)
    model = model_cls(config_cls(**common))
    with torch.no_grad():  # random, not default-initialised, so a wrong mapping cannot hide
        for name, param in model.named_parameters():
            if "mm_projector" in name or "image_newline" in name:
                param.copy_(torch.randn_like(param) * 0.2)
    model.config.torch_dtype = torch.float32
    model.save_pretrained(out, safe_serialization=True)


def test_image() -> Image.Image:
    """A deterministic non-square image (so padding and AnyRes unpadding both matter)."""
    image = Image.new("RGB", (56, 40))
    image.putdata([((7 * x + 3 * y) % 256, (11 * y) % 256, (x * y) % 256) for y in range(40) for x in range(56)])
    return image


def prompts(template: str) -> dict[str, str]:
    """Prompts built as llava/eval/model_vqa.py builds them (image token, newline, question)."""
    single = conv_templates[template].copy()
    single.append_message(single.roles[0], DEFAULT_IMAGE_TOKEN + "\nWhat does the chest x-ray show?")
    single.append_message(single.roles[1], None)
    multi = conv_templates[template].copy()
    multi.append_message(multi.roles[0], DEFAULT_IMAGE_TOKEN + "\nIs there a lesion?")
    multi.append_message(multi.roles[1], "yes, in the left lung")
    multi.append_message(multi.roles[0], "Is there an effusion?")
    multi.append_message(multi.roles[1], None)
    return {"single": single.get_prompt(), "multi": multi.get_prompt()}


@torch.no_grad()
def reference(checkpoint: Path, template: str) -> dict:
    """Original-code ids and logits for each prompt (the builder's loading steps, in float32)."""
    tokenizer = AutoTokenizer.from_pretrained(checkpoint, use_fast=False)
    config = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
    model_cls = LlavaLlamaForCausalLM if config["model_type"] == "llava_llama" else LlavaMistralForCausalLM
    model = model_cls.from_pretrained(checkpoint, low_cpu_mem_usage=True, torch_dtype=torch.float32).eval()
    model.resize_token_embeddings(len(tokenizer))
    model.get_vision_tower().load_model()
    image_processor = model.get_vision_tower().image_processor
    image = test_image()
    pixels = process_images([image], image_processor, model.config).float()
    out = {"template": template, "image_size": list(image.size), "prompts": {}}
    for name, prompt in prompts(template).items():
        ids = tokenizer_image_token(prompt, tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt").unsqueeze(0)
        logits = model(input_ids=ids, images=pixels, image_sizes=[image.size]).logits[0]
        out["prompts"][name] = {"text": prompt, "ids": ids[0].tolist(), "logits": logits.clone(),
                                "tokens": tokenizer.convert_ids_to_tokens([i for i in ids[0].tolist() if i >= 0])}
    out["pixel_values"] = pixels.clone()
    return out


def main(argv: list[str]) -> int:
    out = Path(argv[0])
    kinds = argv[1:] or list(KINDS)
    tokenizer_model = train_tokenizer(out / "spm")
    tower = write_tower(out / "clip-tower")
    for kind in kinds:
        checkpoint = out / kind / "checkpoint"
        write_checkpoint(checkpoint, kind, tokenizer_model, tower)
        torch.save(reference(checkpoint, KINDS[kind][2]), out / kind / "reference.pt")
        print(f"{kind}: reference written")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
