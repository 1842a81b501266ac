"""convert-llava: tiny checkpoints written in the ORIGINAL LLaVA layout → HF llava, tensor for tensor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaForConditionalGeneration,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedTokenizerFast,
)

from medvlm.cli import main
from medvlm.errors import ModelError
from medvlm.model.convert import convert_llava, map_key

MM_HIDDEN, TEXT_HIDDEN = 32, 64


def tokenizer() -> PreTrainedTokenizerFast:
    """A LLaVA-style tokenizer: no <image>, and <unk> doubling as the pad token."""
    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(["a chest x-ray shows a lesion in the left lung", "USER: ASSISTANT: [INST] [/INST]"],
                            trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"],
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<unk>")


def vision_tower() -> CLIPVisionModel:
    torch.manual_seed(1)
    return CLIPVisionModel(CLIPVisionConfig(hidden_size=MM_HIDDEN, intermediate_size=64, num_hidden_layers=3,
                                            num_attention_heads=4, image_size=32, patch_size=8)).eval()


def write_original(root: Path, *, text: str, projector: str, tower_inside: bool, bin_weights: bool = False,
                   tower_name: str = "openai/clip-vit-large-patch14-336", extra: dict | None = None,
                   ) -> tuple[Path, Path, dict[str, torch.Tensor]]:
    """An original-layout checkpoint (``model_type: llava_<text>``) and a separate tower directory."""
    torch.manual_seed(0)
    tok = tokenizer()
    common = dict(vocab_size=len(tok), hidden_size=TEXT_HIDDEN, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    lm_config = LlamaConfig(**common) if text == "llama" else MistralConfig(sliding_window=None, **common)
    lm = (LlamaForCausalLM if text == "llama" else MistralForCausalLM)(lm_config).eval()
    weights = {k: v.clone() for k, v in lm.state_dict().items()}
    if projector == "mlp2x_gelu":
        weights |= {"model.mm_projector.0.weight": torch.randn(TEXT_HIDDEN, MM_HIDDEN) * 0.1,
                    "model.mm_projector.0.bias": torch.randn(TEXT_HIDDEN) * 0.1,
                    "model.mm_projector.2.weight": torch.randn(TEXT_HIDDEN, TEXT_HIDDEN) * 0.1,
                    "model.mm_projector.2.bias": torch.randn(TEXT_HIDDEN) * 0.1}
    else:
        weights |= {"model.mm_projector.weight": torch.randn(TEXT_HIDDEN, MM_HIDDEN) * 0.1,
                    "model.mm_projector.bias": torch.randn(TEXT_HIDDEN) * 0.1}
    tower = vision_tower()
    tower_dir = root / "clip-tower"
    tower.save_pretrained(tower_dir)
    if tower_inside:
        # transformers 4 (which the original code ran on) named the tower's tensors vision_model.*
        weights |= {f"model.vision_tower.vision_tower.vision_model.{k}": v.clone()
                    for k, v in tower.state_dict().items()}
    src = root / f"llava-{text}-{projector}"
    src.mkdir()
    config = lm_config.to_dict() | {
        "model_type": f"llava_{text}", "architectures": [f"Llava{text.title()}ForCausalLM"],
        "mm_vision_tower": tower_name or str(tower_dir), "mm_hidden_size": MM_HIDDEN,
        "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch", "mm_projector_type": projector,
        "image_aspect_ratio": "pad", "mm_use_im_start_end": False, "mm_use_im_patch_token": False,
        "torch_dtype": "float32"} | (extra or {})
    if config.get("mm_patch_merge_type") == "spatial_unpad":
        weights["model.image_newline"] = torch.randn(TEXT_HIDDEN) * 0.1
    (src / "config.json").write_text(json.dumps(config))
    tok.save_pretrained(src)
    keys = sorted(weights)
    if bin_weights:
        torch.save({k: weights[k] for k in keys}, src / "pytorch_model.bin")
    else:  # two shards, as the released checkpoints come
        half = len(keys) // 2
        save_file({k: weights[k].contiguous() for k in keys[:half]}, src / "model-00001-of-00002.safetensors")
        save_file({k: weights[k].contiguous() for k in keys[half:]}, src / "model-00002-of-00002.safetensors")
    return src, tower_dir, weights


def converted_state(dst: Path) -> tuple[LlavaForConditionalGeneration, dict[str, torch.Tensor]]:
    model = LlavaForConditionalGeneration.from_pretrained(dst).eval()
    return model, model.state_dict()


def test_key_mapping() -> None:
    assert map_key("model.layers.3.self_attn.q_proj.weight") == "model.language_model.layers.3.self_attn.q_proj.weight"
    assert map_key("model.embed_tokens.weight") == "model.language_model.embed_tokens.weight"
    assert map_key("model.norm.weight") == "model.language_model.norm.weight"
    assert map_key("lm_head.weight") == "lm_head.weight"
    assert map_key("model.mm_projector.0.weight") == "model.multi_modal_projector.linear_1.weight"
    assert map_key("model.mm_projector.2.bias") == "model.multi_modal_projector.linear_2.bias"
    assert map_key("model.mm_projector.weight") == "model.multi_modal_projector.linear_1.weight"
    assert map_key("model.vision_tower.vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight") == \
        "model.vision_tower.encoder.layers.0.mlp.fc1.weight"
    assert map_key("model.something_else.weight") is None


def test_mlp2x_gelu_llama_with_the_tower_from_a_local_directory(tmp_path: Path) -> None:
    src, tower_dir, original = write_original(tmp_path, text="llama", projector="mlp2x_gelu", tower_inside=False)
    dst = tmp_path / "hf"
    assert main(["convert-llava", str(src), str(dst), "--vision-tower", str(tower_dir)]) == 0
    model, state = converted_state(dst)
    old_rows = original["model.embed_tokens.weight"].shape[0]

    # tensor for tensor under the mapping
    for key, tensor in original.items():
        new = map_key(key)
        if key in ("model.embed_tokens.weight", "lm_head.weight"):
            assert torch.equal(state[new][:old_rows], tensor), key
            assert torch.allclose(state[new][old_rows:], tensor.mean(0).expand(state[new].shape[0] - old_rows, -1))
        else:
            assert torch.equal(state[new], tensor), key
    tower = vision_tower().state_dict()
    for key, tensor in tower.items():
        assert torch.equal(state[f"model.vision_tower.{key}"], tensor), key
    assert len(state) == len(original) + len(tower)

    # tokens added, embeddings resized to a multiple of 64, config fields carried over
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(dst)
    vocab = processor.tokenizer.get_vocab()
    assert model.config.image_token_id == vocab["<image>"] and processor.tokenizer.pad_token == "<pad>"
    assert model.config.text_config.vocab_size == 320 and old_rows == 300 and len(processor.tokenizer) == 302
    assert model.config.vision_feature_layer == -2 and model.config.vision_feature_select_strategy == "default"
    assert model.config.projector_hidden_act == "gelu" and model.config.image_seq_length == 16
    assert processor.image_processor.do_pad  # image_aspect_ratio: pad
    report = json.loads((dst / "conversion.json").read_text())
    assert report["added_tokens"] == ["<image>", "<pad>"] and report["vision_tower_from"] == str(tower_dir)

    # a forward pass: text-only logits equal the original LM; image features are LLaVA's
    lm = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in json.loads((src / "config.json").read_text()).items()
                                         if not k.startswith("mm_")})).eval()
    lm.load_state_dict({k: v for k, v in original.items() if not k.startswith("model.mm_projector")})
    ids = torch.tensor([[1, 50, 60, 70, 80, 2]])
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits[..., :old_rows], lm(input_ids=ids).logits, atol=1e-5)
        pixels = torch.randn(1, 3, 32, 32)
        hidden = vision_tower()(pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
        expected = torch.nn.functional.gelu(hidden @ original["model.mm_projector.0.weight"].T
                                            + original["model.mm_projector.0.bias"])
        expected = expected @ original["model.mm_projector.2.weight"].T + original["model.mm_projector.2.bias"]
        actual = model.get_image_features(pixel_values=pixels)
        actual = actual.pooler_output if hasattr(actual, "pooler_output") else actual
        actual = torch.cat(list(actual)) if isinstance(actual, (list, tuple)) else actual
        assert torch.allclose(actual.reshape(expected.shape), expected, atol=1e-5)
        prompt = processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "a lesion?"}]}],
            add_generation_prompt=True)
        from PIL import Image

        inputs = processor(text=[prompt], images=[Image.new("RGB", (40, 24), (200, 10, 10))], return_tensors="pt")
        assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == 16
        assert prompt.startswith("[INST]") is False and "USER:" in prompt  # llava_llama → vicuna_v1
        assert torch.isfinite(model(**inputs).logits).all()


def test_linear_projector_mistral_with_the_tower_inside_and_bin_weights(tmp_path: Path) -> None:
    """The checkpoint holds the tower; its config names a local tower directory (used for the config)."""
    src, _, original = write_original(tmp_path, text="mistral", projector="linear", tower_inside=True,
                                      bin_weights=True, tower_name="")
    dst = tmp_path / "hf"
    report = convert_llava(src, dst)
    assert report.vision_tower_from == "checkpoint"
    model, state = converted_state(dst)
    assert model.config.text_config.model_type == "mistral" and model.config.projector_hidden_act == "linear"
    for key, tensor in original.items():
        if key not in ("model.embed_tokens.weight", "lm_head.weight"):
            assert torch.equal(state[map_key(key)], tensor), key
    assert torch.equal(state["model.multi_modal_projector.linear_2.weight"], torch.eye(TEXT_HIDDEN))
    assert torch.equal(state["model.multi_modal_projector.linear_2.bias"], torch.zeros(TEXT_HIDDEN))
    with torch.no_grad():
        pixels = torch.randn(2, 3, 32, 32)
        hidden = vision_tower()(pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
        expected = hidden @ original["model.mm_projector.weight"].T + original["model.mm_projector.bias"]
        actual = model.get_image_features(pixel_values=pixels)
        actual = actual.pooler_output if hasattr(actual, "pooler_output") else actual
        actual = torch.cat(list(actual)) if isinstance(actual, (list, tuple)) else actual
        assert torch.allclose(actual.reshape(expected.shape), expected, atol=1e-5)
    from medvlm.model.build import load_pretrained

    again, processor = load_pretrained(dst)  # medvlm's own loader accepts it
    assert processor.chat_template.startswith("{%- macro") and "[INST]" in processor.chat_template


def test_released_towers_inside_a_checkpoint_need_no_copy() -> None:
    """LLaVA-Med v1.5 names openai/clip-vit-large-patch14-336: a known config, checked against the tensors."""
    from medvlm.model.convert import vision_tower_config

    prefix = "model.vision_tower."
    weights = {prefix + "embeddings.patch_embedding.weight": torch.empty(1024, 3, 14, 14)}
    weights |= {f"{prefix}encoder.layers.{i}.mlp.fc1.bias": torch.empty(1) for i in range(24)}
    config = {"mm_vision_tower": "openai/clip-vit-large-patch14-336", "mm_hidden_size": 1024}
    directory, vision = vision_tower_config(config, None, Path("src"), weights)
    assert directory is None and (vision.image_size, vision.patch_size, vision.num_attention_heads) == (336, 14, 16)
    weights[prefix + "embeddings.patch_embedding.weight"] = torch.empty(1024, 3, 16, 16)
    with pytest.raises(ModelError, match="patch embedding"):
        vision_tower_config(config, None, Path("src"), weights)
    with pytest.raises(ModelError, match="--vision-tower"):
        vision_tower_config(config, None, Path("src"), {})  # not inside: a copy is needed


def test_conversion_errors_name_what_is_wrong(tmp_path: Path) -> None:
    src, tower_dir, _ = write_original(tmp_path, text="llama", projector="mlp2x_gelu", tower_inside=False)
    with pytest.raises(ModelError, match="--vision-tower DIR"):
        convert_llava(src, tmp_path / "a")
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps(config | {"mm_projector_type": "mlp3x_gelu"}))
    with pytest.raises(ModelError, match="mm_projector_type"):
        convert_llava(src, tmp_path / "b", vision_tower=tower_dir)
    (src / "config.json").write_text(json.dumps(config | {"model_type": "llava"}))
    with pytest.raises(ModelError, match="already in the Hugging Face llava format"):
        convert_llava(src, tmp_path / "c", vision_tower=tower_dir)
    (src / "config.json").write_text(json.dumps(config | {"torch_dtype": "float8"}))
    with pytest.raises(ModelError, match="torch_dtype 'float8'; pass --dtype"):
        convert_llava(src, tmp_path / "e", vision_tower=tower_dir)
    for bad, message in (({"rope_scaling": "fast please"}, "key 'rope_scaling': expected an object"),  # probe F11
                         ({"rope_theta": "big"}, "key 'rope_theta': expected a positive number")):
        (src / "config.json").write_text(json.dumps(config | bad))
        with pytest.raises(ModelError, match=message):
            convert_llava(src, tmp_path / "g", vision_tower=tower_dir)
    (src / "config.json").write_text(json.dumps(config | {"torch_dtype": None}))  # null: float32
    convert_llava(src, tmp_path / "f", vision_tower=tower_dir)
    assert json.loads((tmp_path / "f" / "config.json").read_text())["dtype"] == "float32"
    (src / "config.json").write_text(json.dumps(config))
    save_file({"model.mystery.weight": torch.zeros(2)}, src / "model-00003-of-00003.safetensors")
    with pytest.raises(ModelError, match="'model.mystery.weight' has no place"):
        convert_llava(src, tmp_path / "d", vision_tower=tower_dir)
    assert not (tmp_path / "d").exists()


def test_pickled_objects_in_bin_weights_are_refused(tmp_path: Path) -> None:
    src, tower_dir, _ = write_original(tmp_path, text="llama", projector="linear", tower_inside=False,
                                       bin_weights=True)
    torch.save({"model.norm.weight": torch.zeros(2), "payload": Path("/etc")}, src / "pytorch_model.bin")
    with pytest.raises(ModelError, match="holds more than plain tensors .*refused, nothing in it was run") as error:
        convert_llava(src, tmp_path / "x", vision_tower=tower_dir)
    # one line, and not torch's advice to load the file unrestricted (probe V02)
    assert "\n" not in str(error.value) and "weights_only=False" not in str(error.value)


def test_rotary_embedding_settings_are_kept() -> None:
    """transformers 5 keeps rope_theta / rope_scaling in rope_parameters; dropping them ran LLaVA-Med v1.5's
    Mistral at base 1e4 instead of 1e6."""
    from medvlm.model.convert import text_config

    base = {"hidden_size": TEXT_HIDDEN, "num_attention_heads": 4, "mm_hidden_size": MM_HIDDEN}
    mistral = text_config(base | {"model_type": "llava_mistral", "rope_theta": 1000000.0})
    assert mistral.rope_parameters == {"rope_type": "default", "rope_theta": 1000000.0}
    llama = text_config(base | {"model_type": "llava_llama", "rope_scaling": {"type": "linear", "factor": 2.0}})
    assert llama.rope_parameters == {"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0}
    with pytest.raises(ModelError, match="rope_scaling' has type 'su'"):
        text_config(base | {"model_type": "llava_llama", "rope_scaling": {"type": "su"}})


def test_the_converted_model_runs_at_the_checkpoints_rope_base(tmp_path: Path) -> None:
    src, tower_dir, _ = write_original(tmp_path, text="mistral", projector="mlp2x_gelu", tower_inside=False,
                                       extra={"rope_theta": 1000000.0})
    convert_llava(src, tmp_path / "hf", vision_tower=tower_dir)
    model, _ = converted_state(tmp_path / "hf")
    inv_freq = model.model.language_model.rotary_emb.inv_freq
    head_dim = TEXT_HIDDEN // 4
    assert torch.allclose(inv_freq, 1.0 / 1000000.0 ** (torch.arange(0, head_dim, 2).float() / head_dim))


CORPUS = ["A chat between a curious user and an artificial intelligence assistant.",
          "USER: ASSISTANT: What does the chest x-ray show? a lesion in the left lung"] * 8


def sentencepiece_only(src: Path, legacy: bool | None) -> Path:
    """Replace the checkpoint's tokenizer by a Llama-style sentencepiece tokenizer.model (LLaVA-1.5 ships only
    that): byte fallback, dummy prefix, <unk>/<s>/</s> = 0/1/2, 300 pieces as the embedding has rows."""
    import sentencepiece as spm

    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (src / name).unlink(missing_ok=True)
    corpus = src.parent / "corpus.txt"
    corpus.write_text("\n".join(CORPUS))
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(src / "tokenizer"), model_type="bpe",
                                   vocab_size=300, byte_fallback=True, add_dummy_prefix=True,
                                   remove_extra_whitespaces=False, normalization_rule_name="identity",
                                   unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2)
    (src / "tokenizer.vocab").unlink()
    settings = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
                "pad_token": "<unk>"} | ({} if legacy is None else {"legacy": legacy})
    (src / "tokenizer_config.json").write_text(json.dumps(settings))
    return src / "tokenizer.model"


def test_a_sentencepiece_only_checkpoint_gives_the_original_codes_token_ids(tmp_path: Path) -> None:
    """The original tokenises bos + each chunk between <image>s on its own (tokenizer_image_token): a "▁"
    starts the text after bos and after the image; the converted chat template + tokenizer give the same ids."""
    import sentencepiece as spm
    from PIL import Image
    from transformers import AutoProcessor

    from medvlm.data.templates import chunk_gap

    src, tower_dir, _ = write_original(tmp_path, text="llama", projector="mlp2x_gelu", tower_inside=False)
    sp = spm.SentencePieceProcessor(model_file=str(sentencepiece_only(src, legacy=False)))
    convert_llava(src, tmp_path / "hf", vision_tower=tower_dir)
    processor = AutoProcessor.from_pretrained(tmp_path / "hf")
    tokenizer = processor.tokenizer
    assert chunk_gap(tokenizer) == " "
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "a lesion?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    system = "A chat between a curious user and an artificial intelligence assistant. The assistant gives " \
             "helpful, detailed, and polite answers to the user's questions."
    assert text == f"<s> {system} USER: <image> \na lesion? ASSISTANT:"
    ids = processor(text=[text], images=[Image.new("RGB", (32, 32))], add_special_tokens=False)["input_ids"][0]
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    first, second = f"{system} USER: ", "\na lesion? ASSISTANT:"
    assert ids == [1, *sp.encode(first), *[image_id] * 16, *sp.encode(second)]  # the original's chunks
    after_image = tokenizer.convert_ids_to_tokens(ids[ids.index(image_id) + 16:][:2])
    assert after_image == ["▁", "<0x0A>"] and tokenizer.convert_ids_to_tokens(ids[1]).startswith("▁")


def test_an_unset_legacy_flag_reads_the_tokenizer_as_transformers_4_did(tmp_path: Path) -> None:
    """transformers 4's slow tokenizer was legacy (a "▁" after every special token) unless told otherwise."""
    from transformers import AutoTokenizer

    from medvlm.data.templates import chunk_gap

    src, tower_dir, _ = write_original(tmp_path, text="mistral", projector="linear", tower_inside=False)
    sentencepiece_only(src, legacy=None)
    convert_llava(src, tmp_path / "hf", vision_tower=tower_dir)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert tokenizer.convert_ids_to_tokens(tokenizer("</s>USER", add_special_tokens=False)["input_ids"])[1] \
        .startswith("▁")
    assert chunk_gap(tokenizer) == ""


def test_a_sentencepiece_tokenizer_without_the_package_is_a_clear_error(tmp_path: Path, monkeypatch,
                                                                       capsys) -> None:
    src, tower_dir, _ = write_original(tmp_path, text="llama", projector="linear", tower_inside=False)
    sentencepiece_only(src, legacy=False)
    monkeypatch.setitem(__import__("sys").modules, "sentencepiece", None)
    assert main(["convert-llava", str(src), str(tmp_path / "hf"), "--vision-tower", str(tower_dir)]) == 2
    assert "tokenizer.model: a sentencepiece tokenizer; reading it needs the 'sentencepiece' package" in \
        capsys.readouterr().err
    assert not (tmp_path / "hf").exists()


NEXT = {"image_aspect_ratio": "anyres", "mm_patch_merge_type": "spatial_unpad",
        "image_grid_pinpoints": [[32, 64], [64, 32], [64, 64]]}


def test_a_llava_next_checkpoint_converts_to_llava_next(tmp_path: Path) -> None:
    from PIL import Image
    from transformers import AutoProcessor, LlavaNextForConditionalGeneration

    src, tower_dir, original = write_original(tmp_path, text="llama", projector="mlp2x_gelu", tower_inside=False,
                                              extra=NEXT)
    report = convert_llava(src, tmp_path / "hf", vision_tower=tower_dir)
    assert report.architecture == "LlavaNextForConditionalGeneration"
    model = LlavaNextForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    # the original lists pinpoints as (width, height), transformers as (height, width)
    assert model.config.image_grid_pinpoints == [[64, 32], [32, 64], [64, 64]]
    assert torch.equal(model.model.image_newline, original["model.image_newline"])
    processor = AutoProcessor.from_pretrained(tmp_path / "hf")
    assert type(processor).__name__ == "LlavaNextProcessor"
    assert processor.image_processor.image_grid_pinpoints == [[64, 32], [32, 64], [64, 64]]
    text = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"},
                                                                       {"type": "text", "text": "a lesion?"}]}],
                                         add_generation_prompt=True)
    inputs = processor(text=[text], images=[Image.new("RGB", (56, 40), (200, 10, 10))], return_tensors="pt")
    # 56x40 → the 64x64 grid: 4 tiles + the base image; 16 base features + 6 unpadded rows of 8, each + newline
    assert tuple(inputs["pixel_values"].shape) == (1, 5, 3, 32, 32)
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == 16 + 6 * 8 + 6
    with torch.no_grad():
        assert torch.isfinite(model(**inputs).logits).all()


def test_what_cannot_be_converted_is_a_clear_error(tmp_path: Path) -> None:
    src, tower_dir, _ = write_original(tmp_path, text="llama", projector="mlp2x_gelu", tower_inside=False,
                                       extra=NEXT | {"mm_patch_merge_type": "spatial"})
    with pytest.raises(ModelError, match="'mm_patch_merge_type' is 'spatial'"):
        convert_llava(src, tmp_path / "a", vision_tower=tower_dir)
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps(config | {"mm_patch_merge_type": "spatial_unpad",
                                                          "image_grid_pinpoints": None}))
    with pytest.raises(ModelError, match="'image_grid_pinpoints' is missing"):
        convert_llava(src, tmp_path / "b", vision_tower=tower_dir)
    (src / "config.json").write_text(json.dumps(config | {"image_aspect_ratio": "pad"}))
    with pytest.raises(ModelError, match="without image_aspect_ratio anyres"):
        convert_llava(src, tmp_path / "c", vision_tower=tower_dir)
