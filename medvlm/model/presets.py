"""Sizes of the tiny random models tests and the CPU demo build (every family builds from these)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TinyPreset:
    vision: str  # clip | siglip
    text: str  # llama | mistral
    image_size: int = 32
    patch_size: int = 8
    vision_hidden: int = 64
    vision_layers: int = 3
    text_hidden: int = 128
    text_layers: int = 4
    text_heads: int = 4
    text_kv_heads: int = 2
    text_intermediate: int = 352
    projector_act: str = "gelu"


PRESETS: dict[str, TinyPreset] = {
    "tiny-clip-llama": TinyPreset("clip", "llama"),
    "tiny-siglip-mistral": TinyPreset("siglip", "mistral"),
    "tiny-clip-mistral": TinyPreset("clip", "mistral"),
    "tiny-siglip-llama": TinyPreset("siglip", "llama"),
    # Smallest usable model, for fast unit tests.
    "micro-clip-llama": TinyPreset("clip", "llama", image_size=16, vision_hidden=32, vision_layers=2,
                                   text_hidden=32, text_layers=2, text_heads=2, text_kv_heads=1,
                                   text_intermediate=64),
}
