"""Original LLaVA / LLaVA-Med / LLaVA-NeXT checkpoints → the Hugging Face format (transformers) uses.

The original code (``LlavaLlamaForCausalLM`` / ``LlavaMistralForCausalLM``, model types
``llava_llama`` and ``llava_mistral``) stores one causal LM with extra keys::

    model.embed_tokens / model.layers.N / model.norm / lm_head      the language model
    model.mm_projector.{0,2}.*    (mlp2x_gelu)  or  model.mm_projector.*  (linear)
    model.vision_tower.vision_tower.vision_model.*                  the CLIP tower, often absent

and describes the vision side in config fields: ``mm_vision_tower`` (a Hub name, e.g.
``openai/clip-vit-large-patch14-336``), ``mm_hidden_size``, ``mm_vision_select_layer`` (-2),
``mm_vision_select_feature`` (patch → drop CLS), ``mm_projector_type`` and ``image_aspect_ratio``.
Loading such a directory as ``LlavaForConditionalGeneration`` "works" with random projector and
tower weights; this converter maps every tensor explicitly instead, and fails on any it cannot place.

What it does:

* renames the tensors (:func:`map_key`); a ``linear`` projector becomes HF llava's two-layer
  projector with an identity activation and an identity second layer, which computes the same;
* takes the vision tower from the checkpoint, or — when absent — from a local directory the user
  names (no download, ever);
* adds the ``<image>`` and ``<pad>`` tokens and resizes the embeddings and ``lm_head`` (new rows
  are the mean of the existing ones; padded to a multiple of 64 like the llava-hf releases);
* keeps the language model's rotary embedding (``rope_theta``, ``rope_scaling``: transformers 5 holds
  them in ``rope_parameters``; LLaVA-Med v1.5's Mistral runs at base 1e6, not the default 1e4);
* reads a tokenizer shipped as sentencepiece ``tokenizer.model`` only (LLaVA-1.5 ships that), as
  the original's slow tokenizer reads it (``legacy`` true unless its config says otherwise);
* writes a processor (LLaVA's pad-to-square when ``image_aspect_ratio`` is ``pad``) and the chat
  template of the original conversation it was trained with, whose text tokenises to the original
  code's ids (:func:`medvlm.data.templates.chunk_gap`), recorded in ``prompt.json``;
* converts a LLaVA-NeXT checkpoint (``image_aspect_ratio: anyres``, ``mm_patch_merge_type:
  spatial_unpad``, ``image_grid_pinpoints``, ``model.image_newline``) to
  ``LlavaNextForConditionalGeneration`` (pinpoints turned from the original's (width, height) into
  transformers' (height, width)).

``tests/reference/original_llava.py`` checks a converted directory against the original code itself:
same token ids, logits within 1e-4 at every position.

Weights are read from safetensors, or from ``.bin`` files with ``torch.load(weights_only=True)``:
nothing is unpickled.
"""

from __future__ import annotations

import logging
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from medvlm.errors import PICKLE_REFUSED, ModelError, first_line, shorten
from medvlm.io import check_replaceable, read_json

log = logging.getLogger("medvlm")

IMAGE_TOKEN = "<image>"
PAD_TOKEN = "<pad>"
CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
TEXT_MODEL_TYPES = {"llava_llama": "llama", "llava_mistral": "mistral"}
DEFAULT_TEMPLATES = {"llava_llama": "vicuna_v1", "llava_mistral": "mistral_instruct"}
PROJECTOR_TYPES = ("linear", "mlp2x_gelu")
ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "llama3", "longrope")
# Keys the original code saved that carry no learned state.
IGNORED_KEYS = re.compile(r".*\.rotary_emb\.inv_freq$")

_RULES: list[tuple[re.Pattern[str], str]] = [
    # transformers 5's CLIPVisionModel / SiglipVisionModel have no ``vision_model`` level any more
    (re.compile(r"^model\.vision_tower\.vision_tower\.vision_model\.(.*)$"), r"model.vision_tower.\1"),
    (re.compile(r"^model\.mm_projector\.0\.(weight|bias)$"), r"model.multi_modal_projector.linear_1.\1"),
    (re.compile(r"^model\.mm_projector\.2\.(weight|bias)$"), r"model.multi_modal_projector.linear_2.\1"),
    (re.compile(r"^model\.mm_projector\.(weight|bias)$"), r"model.multi_modal_projector.linear_1.\1"),
    (re.compile(r"^model\.(embed_tokens|layers|norm)(\..*)$"), r"model.language_model.\1\2"),
    (re.compile(r"^lm_head\.weight$"), r"lm_head.weight"),
    (re.compile(r"^model\.image_newline$"), r"model.image_newline"),  # LLaVA-NeXT
]


def map_key(key: str) -> str | None:
    """The HF llava (in-memory) name of an original LLaVA tensor; None when no rule applies."""
    for pattern, replacement in _RULES:
        if pattern.match(key):
            return pattern.sub(replacement, key)
    return None


@dataclass
class ConversionReport:
    """What the conversion did, written next to the converted model as ``conversion.json``."""

    source: str
    model_type: str
    projector_type: str
    vision_tower_from: str
    architecture: str = "LlavaForConditionalGeneration"
    added_tokens: list[str] = field(default_factory=list)
    vocab_size: tuple[int, int] = (0, 0)
    tensors: int = 0
    ignored: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------
# Reading the original checkpoint
# --------------------------------------------------------------------------------------------------


def read_original_config(src: Path) -> dict[str, Any]:
    path = src / "config.json"
    if not path.is_file():
        raise ModelError(f"{src}: no config.json; expected an original LLaVA / LLaVA-Med checkpoint directory")
    config = read_json(path)
    if not isinstance(config, dict):
        raise ModelError(f"{path}: expected a JSON object, got {type(config).__name__}")
    model_type = config.get("model_type")
    if model_type == "llava":
        raise ModelError(f"{path}: already in the Hugging Face llava format; nothing to convert")
    if model_type not in TEXT_MODEL_TYPES:
        raise ModelError(f"{path}: model_type '{model_type}' is not an original LLaVA checkpoint this converter "
                         f"handles ({', '.join(TEXT_MODEL_TYPES)})")
    for key in ("mm_hidden_size", "hidden_size"):
        if key not in config:
            raise ModelError(f"{path}: key '{key}' is missing")
    projector = config.get("mm_projector_type", "linear")
    if projector not in PROJECTOR_TYPES:
        raise ModelError(f"{path}: key 'mm_projector_type' is '{projector}'; supported: {', '.join(PROJECTOR_TYPES)}")
    aspect = config.get("image_aspect_ratio", "square")
    if aspect == "anyres":
        merge = config.get("mm_patch_merge_type", "flat")
        if merge != "spatial_unpad":
            raise ModelError(f"{path}: key 'mm_patch_merge_type' is '{merge}'; an anyres (LLaVA-NeXT) checkpoint "
                             "converts only with 'spatial_unpad' (what LlavaNextForConditionalGeneration computes)")
        if not config.get("image_grid_pinpoints"):
            raise ModelError(f"{path}: key 'image_grid_pinpoints' is missing (needed with image_aspect_ratio anyres)")
    elif aspect not in ("pad", "square", "resize", None):
        raise ModelError(f"{path}: key 'image_aspect_ratio' is '{aspect}'; supported: pad, square, anyres")
    elif config.get("mm_patch_merge_type", "flat") != "flat":
        raise ModelError(f"{path}: key 'mm_patch_merge_type' is '{config['mm_patch_merge_type']}' without "
                         "image_aspect_ratio anyres; only 'flat' converts then")
    if config.get("mm_use_im_start_end"):
        raise ModelError(f"{path}: key 'mm_use_im_start_end' is true: <im_start>/<im_end> tokens are not "
                         "supported by Hugging Face llava")
    return config


def read_weights(src: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint (sharded or not), without unpickling anything."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    safetensors = sorted(src.glob("*.safetensors"))
    bins = sorted(p for p in src.glob("*.bin") if p.name != "training_args.bin")
    if not safetensors and not bins:
        raise ModelError(f"{src}: no weights (*.safetensors or pytorch_model*.bin)")
    weights: dict[str, torch.Tensor] = {}
    for path in safetensors or bins:
        if path.suffix == ".safetensors":
            try:
                part = load_file(path)
            except (SafetensorError, OSError) as exc:  # truncated or not safetensors at all
                raise ModelError(f"{path}: not a readable safetensors file ({first_line(exc)})") from None
        else:
            try:
                part = torch.load(path, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError:  # torch's own message suggests loading it unrestricted: not ours
                raise ModelError(f"{path}: {PICKLE_REFUSED}; convert from safetensors or a plain tensor file"
                                 ) from None
            except Exception as exc:  # noqa: BLE001 - any other refusal is a bad file for the user
                raise ModelError(f"{path}: not a plain tensor file ({first_line(exc)})") from None
        duplicated = weights.keys() & part.keys()
        if duplicated:
            raise ModelError(f"{path}: tensor {sorted(duplicated)[0]} also appears in another shard")
        weights.update(part)
    return weights


# --------------------------------------------------------------------------------------------------
# Vision tower
# --------------------------------------------------------------------------------------------------


def _known_tower(name: str):
    """Configs of the towers the released LLaVA / LLaVA-Med checkpoints name (used when their weights are
    inside the checkpoint, so no copy of the tower is needed)."""
    from transformers import CLIPVisionConfig

    image_size = {"openai/clip-vit-large-patch14-336": 336, "openai/clip-vit-large-patch14": 224}.get(name)
    if image_size is None:
        return None
    return CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                            image_size=image_size, patch_size=14, projection_dim=768, hidden_act="quick_gelu",
                            layer_norm_eps=1e-5)


def check_tower_shapes(vision, weights: dict[str, torch.Tensor], where: str) -> None:
    """A tower config must describe the tower tensors the checkpoint holds."""
    prefix = "model.vision_tower."
    patch = weights.get(prefix + "embeddings.patch_embedding.weight")
    layers = {int(m.group(1)) for k in weights if (m := re.match(re.escape(prefix) + r"encoder\.layers\.(\d+)\.", k))}
    expected = (vision.hidden_size, 3, vision.patch_size, vision.patch_size)
    if patch is not None and tuple(patch.shape) != expected:
        raise ModelError(f"{where}: the vision tower config says patch embedding {expected}, the checkpoint "
                         f"holds {tuple(patch.shape)}")
    if layers and len(layers) != vision.num_hidden_layers:
        raise ModelError(f"{where}: the vision tower config has {vision.num_hidden_layers} layers, the checkpoint "
                         f"{len(layers)}")


def vision_tower_config(config: dict[str, Any], vision_tower: Path | None, src: Path,
                        weights: dict[str, torch.Tensor]):
    """The tower's config and the directory it came from (None for a known tower inside the checkpoint).

    Sources, in order: the directory the user names; a local directory the checkpoint's
    ``mm_vision_tower`` names; the known config of a released tower whose weights the checkpoint holds.
    """
    from transformers import AutoConfig

    named = config.get("mm_vision_tower") or config.get("vision_tower") or ""
    inside = any(k.startswith("model.vision_tower.") for k in weights)
    directory = vision_tower or (Path(named) if named and Path(named).is_dir() else None)
    if directory is None:
        vision = _known_tower(named) if inside else None
        if vision is None:
            raise ModelError(
                f"{src / 'config.json'}: the vision tower is '{named}', which is not a local directory"
                f"{'' if inside else ' and not in the checkpoint'}; pass --vision-tower DIR with a local copy "
                "of it (medvlm never downloads)")
    else:
        if not (directory / "config.json").is_file():
            raise ModelError(f"{directory}: no config.json; expected a CLIP / SigLIP model directory")
        read_json(directory / "config.json")  # a truncated file: one line naming it, not transformers' traceback
        loaded = AutoConfig.from_pretrained(directory)
        vision = getattr(loaded, "vision_config", loaded)
    if vision.model_type not in ("clip_vision_model", "siglip_vision_model"):
        raise ModelError(f"{directory}: model_type '{vision.model_type}' is not a CLIP or SigLIP vision model")
    if vision.hidden_size != config["mm_hidden_size"]:
        raise ModelError(f"{directory or named}: vision hidden size {vision.hidden_size} does not match the "
                         f"checkpoint's mm_hidden_size {config['mm_hidden_size']}")
    check_tower_shapes(vision, weights, str(src))
    return directory, vision


def vision_tower_weights(directory: Path, vision_config) -> dict[str, torch.Tensor]:
    """The tower's weights under HF llava names, loaded with transformers (safetensors or safe .bin)."""
    from transformers import CLIPVisionModel, SiglipVisionModel

    cls = CLIPVisionModel if vision_config.model_type == "clip_vision_model" else SiglipVisionModel
    tower = cls.from_pretrained(directory, config=vision_config)
    return {f"model.vision_tower.{key}": value for key, value in tower.state_dict().items()}


# --------------------------------------------------------------------------------------------------
# Assembling the HF model
# --------------------------------------------------------------------------------------------------


def rope_parameters(config: dict[str, Any], where: str) -> dict[str, Any]:
    """transformers 5's ``rope_parameters`` from the original's ``rope_theta`` and ``rope_scaling``."""
    scaling, theta = config.get("rope_scaling") or {}, config.get("rope_theta", 10000.0)
    if not isinstance(scaling, dict):
        raise ModelError(f"{where}: key 'rope_scaling': expected an object (type, factor, ...), got {shorten(scaling)}")
    if not isinstance(theta, (int, float)) or isinstance(theta, bool) or not 0 < theta < float("inf"):
        raise ModelError(f"{where}: key 'rope_theta': expected a positive number, got {shorten(theta)}")
    scaling = dict(scaling)
    kind = scaling.pop("rope_type", None) or scaling.pop("type", None) or "default"
    if kind not in ROPE_TYPES:
        raise ModelError(f"{where}: key 'rope_scaling' has type '{kind}'; supported: {', '.join(ROPE_TYPES)}")
    return {"rope_type": kind, "rope_theta": float(theta), **scaling}


def text_config(config: dict[str, Any], where: str = "config.json"):
    """The language model's config: the original's fields the text model knows, rotary embedding included."""
    from transformers import AutoConfig

    text_type = TEXT_MODEL_TYPES[config["model_type"]]
    defaults = AutoConfig.for_model(text_type).to_dict()
    fields = {k: v for k, v in config.items() if k in defaults and not k.startswith("_")
              and k not in ("model_type", "architectures", "transformers_version", "dtype", "torch_dtype",
                            "rope_scaling", "rope_theta")}
    fields["rope_parameters"] = rope_parameters(config, where)
    text = AutoConfig.for_model(text_type, **fields)
    kept = text.rope_parameters
    if kept.get("rope_theta") != fields["rope_parameters"]["rope_theta"] or \
            kept.get("rope_type") != fields["rope_parameters"]["rope_type"]:
        raise ModelError(f"{where}: transformers did not keep the rotary embedding settings "
                         f"({fields['rope_parameters']} became {kept})")
    return text


def load_tokenizer(src: Path):
    """The checkpoint's tokenizer as the original code read it (``AutoTokenizer(use_fast=False)``).

    A sentencepiece ``tokenizer.model`` is converted by transformers (needs the ``sentencepiece``
    package). transformers 4's slow Llama tokenizer defaulted to ``legacy=True`` (the dummy prefix
    after every special token); transformers 5 defaults to False, so an unset ``legacy`` is set to True.
    """
    from transformers import AutoTokenizer

    files = {p.name for p in src.iterdir()}
    if not files & {"tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json"}:
        raise ModelError(f"{src}: no tokenizer (tokenizer.model, tokenizer.json or vocab.json)")
    sentencepiece_only = "tokenizer.model" in files and "tokenizer.json" not in files
    if sentencepiece_only:
        try:
            import sentencepiece  # noqa: F401
        except ImportError:
            raise ModelError(f"{src / 'tokenizer.model'}: a sentencepiece tokenizer; reading it needs the "
                             "'sentencepiece' package (pip install sentencepiece protobuf)") from None
    options: dict[str, Any] = {}
    settings_file = src / "tokenizer_config.json"
    settings = read_json(settings_file) if settings_file.is_file() else {}
    if sentencepiece_only and settings.get("legacy") is None:
        options["legacy"] = True
    try:
        return AutoTokenizer.from_pretrained(src, **options)
    except Exception as exc:  # noqa: BLE001 - any reader failure is an unreadable tokenizer for the user
        raise ModelError(f"{src}: cannot read the tokenizer ({type(exc).__name__}: {exc})") from None


def add_tokens(tokenizer) -> list[str]:
    """Add ``<image>`` and a dedicated ``<pad>`` (original LLaVA pads with ``<unk>``) when missing."""
    from tokenizers import AddedToken

    added = []
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)], special_tokens=True)
        added.append(IMAGE_TOKEN)
    pad = tokenizer.pad_token
    if pad is None or pad in (tokenizer.unk_token, tokenizer.eos_token, tokenizer.bos_token):
        if PAD_TOKEN not in tokenizer.get_vocab():
            added.append(PAD_TOKEN)
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    return added


def resize_rows(weight: torch.Tensor, rows: int) -> torch.Tensor:
    """``weight`` with extra rows set to the mean of the existing ones (a neutral starting point)."""
    if rows < weight.shape[0]:
        raise ModelError(f"the tokenizer has fewer tokens than the checkpoint's embedding ({weight.shape[0]})")
    extra = weight.float().mean(dim=0, keepdim=True).to(weight.dtype).expand(rows - weight.shape[0], -1)
    return torch.cat([weight, extra], dim=0)


def projector_tensors(weights: dict[str, torch.Tensor], projector_type: str, text_hidden: int,
                      ) -> dict[str, torch.Tensor]:
    """A linear projector as HF's two-layer one: identity activation and identity second layer."""
    if projector_type != "linear":
        return {}
    dtype = weights["model.multi_modal_projector.linear_1.weight"].dtype
    return {"model.multi_modal_projector.linear_2.weight": torch.eye(text_hidden, dtype=dtype),
            "model.multi_modal_projector.linear_2.bias": torch.zeros(text_hidden, dtype=dtype)}


def build_processor(tokenizer, vision_config, vision_dir: Path | None, config: dict[str, Any]):
    """The processor of the converted model, from its family: LLaVA-1.5's (pad to square or not) or
    LLaVA-NeXT's (AnyRes)."""
    mean, std, size = CLIP_MEAN, CLIP_STD, vision_config.image_size
    preprocessor = vision_dir / "preprocessor_config.json" if vision_dir else None
    if preprocessor is not None and preprocessor.is_file():
        settings = read_json(preprocessor)
        mean, std = settings.get("image_mean", mean), settings.get("image_std", std)
    clip = vision_config.model_type == "clip_vision_model"
    image_settings = dict(size={"shortest_edge": size} if clip else {"height": size, "width": size},
                          crop_size={"height": size, "width": size}, do_center_crop=clip, image_mean=mean,
                          image_std=std)
    token_settings = dict(patch_size=vision_config.patch_size,
                          vision_feature_select_strategy="default" if clip else "full",
                          num_additional_image_tokens=1 if clip else 0)
    return target_family(config).conversion_processor(tokenizer, image_settings, token_settings, config)


def target_family(config: dict[str, Any]):
    """The family an original checkpoint converts to: LLaVA-NeXT for AnyRes checkpoints, else LLaVA-1.5."""
    from medvlm.model.families import get_family

    return get_family("llava_next" if config.get("image_aspect_ratio") == "anyres" else "llava")


def convert_llava(src: str | Path, dst: str | Path, *, vision_tower: str | Path | None = None,
                  template: str | None = None, dtype: str | None = None,
                  pad_to_multiple_of: int = 64) -> ConversionReport:
    """``medvlm convert-llava``: write ``dst`` as a Hugging Face llava (or llava_next) directory."""
    from transformers.initialization import no_init_weights

    from medvlm.model.build import DTYPES
    from medvlm.model.export import save_llava_dir
    from medvlm.model.families.llava_next import original_pinpoints
    from medvlm.model.prompting import TrainedPrompt

    src, dst = Path(src), Path(dst)
    protect = (src, *((vision_tower,) if vision_tower else ()))
    check_replaceable(dst, protect=protect)  # before the (slow) conversion
    config = read_original_config(src)
    stored = config.get("torch_dtype") or config.get("dtype") or "float32"
    if not dtype and stored not in DTYPES:
        raise ModelError(f"{src}: config.json gives torch_dtype {stored!r}; pass --dtype "
                         f"({', '.join(DTYPES)})")
    original = read_weights(src)

    weights: dict[str, torch.Tensor] = {}
    report = ConversionReport(str(src), config["model_type"], config.get("mm_projector_type", "linear"),
                              vision_tower_from="checkpoint")
    for key, tensor in original.items():
        if IGNORED_KEYS.match(key):
            report.ignored.append(key)
            continue
        new = map_key(key)
        if new is None:
            raise ModelError(f"{src}: tensor '{key}' has no place in the Hugging Face llava model")
        weights[new] = tensor
    vision_dir, vision = vision_tower_config(config, Path(vision_tower) if vision_tower else None, src, weights)
    if not any(k.startswith("model.vision_tower.") for k in weights):
        weights.update(vision_tower_weights(vision_dir, vision))
        report.vision_tower_from = str(vision_dir)

    text = text_config(config, str(src / "config.json"))
    weights.update(projector_tensors(weights, report.projector_type, text.hidden_size))
    tokenizer = load_tokenizer(src)
    report.added_tokens = add_tokens(tokenizer)
    old_rows = weights["model.language_model.embed_tokens.weight"].shape[0]
    rows = -(-len(tokenizer) // pad_to_multiple_of) * pad_to_multiple_of
    for key in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
        if key in weights:
            weights[key] = resize_rows(weights[key], max(rows, old_rows))
    text.vocab_size = max(rows, old_rows)
    text.pad_token_id = tokenizer.pad_token_id
    report.vocab_size = (old_rows, text.vocab_size)

    select = config.get("mm_vision_select_feature", "patch")
    next_ = config.get("image_aspect_ratio") == "anyres"
    settings = dict(
        vision_config=vision.to_dict(), text_config=text.to_dict(),
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        projector_hidden_act="gelu" if report.projector_type == "mlp2x_gelu" else "linear",
        vision_feature_select_strategy="default" if select == "patch" else "full",
        vision_feature_layer=config.get("mm_vision_select_layer", -2),
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)))
    if next_:
        if "model.image_newline" not in weights:
            raise ModelError(f"{src}: a spatial_unpad (LLaVA-NeXT) checkpoint without the tensor "
                             "'model.image_newline'")
        llava = target_family(config).config_class()(image_grid_pinpoints=original_pinpoints(config), **settings)
    else:
        llava = target_family(config).config_class()(
            image_seq_length=(vision.image_size // vision.patch_size) ** 2, **settings)
    model_cls = target_family(config).model_class()
    report.architecture = model_cls.__name__
    llava.pad_token_id = tokenizer.pad_token_id
    target_dtype = DTYPES[dtype or stored]
    with no_init_weights():
        model = model_cls(llava)
    model = model.to(target_dtype)
    result = model.load_state_dict({k: v.to(target_dtype) for k, v in weights.items()}, strict=False, assign=True)
    missing = [k for k in result.missing_keys if not (k == "lm_head.weight" and llava.tie_word_embeddings)]
    if missing or result.unexpected_keys:
        raise ModelError(f"{src}: the converted weights do not fit the model: missing {missing[:5]}, "
                         f"unexpected {result.unexpected_keys[:5]}")
    if llava.tie_word_embeddings:
        model.tie_weights()
    report.tensors = len(weights)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    processor = build_processor(tokenizer, vision, vision_dir, config)
    save_llava_dir(model, processor, dst, TrainedPrompt(template or DEFAULT_TEMPLATES[config["model_type"]]),
                   protect=protect)
    from medvlm.io import write_json

    write_json(dst / "conversion.json", {**report.__dict__, "vocab_size": list(report.vocab_size)})
    log.info("converted %s → %s (%d tensors; vision tower from %s; added %s)", src, dst, report.tensors,
             report.vision_tower_from, report.added_tokens or "no tokens")
    return report
