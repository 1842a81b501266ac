"""``medvlm data preview``: what the model will actually see, and what it is trained to say.

Prints, for the first samples of a recipe's training data, the rendered prompt (image tokens
collapsed to ``<image>×N``) and the exact text of the supervised label tokens, decoded from the
token ids — the quickest way to catch a wrong template or a masking mistake before a long run.
"""

from __future__ import annotations

import re

from medvlm.data.collate import IGNORE_INDEX, TooLong, sample_image_sizes
from medvlm.data.reading import read_samples
from medvlm.data.templates import get_template
from medvlm.model.build import check_llava_dir, encoder_for, load_model, preparer_for
from medvlm.recipe import ModelSpec, load_recipe


def _processor_and_config(spec: ModelSpec, template: str):
    """The processor and model config a recipe's model has, without loading large weights."""
    if spec.preset or not spec.path:
        model, processor = load_model(spec, template)
        return processor, model.config
    from pathlib import Path

    from transformers import AutoConfig

    family = check_llava_dir(Path(spec.path), spec.family)
    config = AutoConfig.from_pretrained(spec.path)
    return family.finish_processor(family.load_processor(Path(spec.path)), config), config


def label_segments(input_ids: list[int], labels: list[int]) -> list[list[int]]:
    """Runs of consecutive supervised token ids."""
    segments: list[list[int]] = []
    current: list[int] = []
    for token, label in zip(input_ids, labels, strict=True):
        if label != IGNORE_INDEX:
            current.append(token)
        elif current:
            segments.append(current)
            current = []
    if current:
        segments.append(current)
    return segments


def preview(recipe_path: str, overrides: list[str] | None = None, count: int = 3) -> str:
    recipe = load_recipe(recipe_path, overrides)
    specs = [spec.model_copy(update={"limit": count}) for spec in recipe.data.train]
    samples, _ = read_samples(specs, policy=recipe.data.on_bad_record, prompt_style=recipe.data.prompt_style,
                              image_check=recipe.data.image_check)
    processor, config = _processor_and_config(recipe.model, recipe.data.template)
    tokenizer = processor.tokenizer
    encoder = encoder_for(config, processor, get_template(recipe.data.template), recipe.data.max_length,
                          recipe.data.system_prompt)
    preparer = preparer_for(config, processor, recipe.data.image_aspect_ratio)
    per_image = encoder.image_token_count or "by image size"
    blocks = [f"template: {recipe.data.template} · {per_image} image tokens per image · "
              f"max_length {recipe.data.max_length}"]
    run = re.compile(f"(?:{re.escape(encoder.image_token)})+")
    for sample in samples[:count]:
        try:
            sizes = sample_image_sizes(sample, preparer) if encoder.image_tokens.needs_sizes and sample.images else None
            encoded = encoder.encode(sample, sizes)
        except TooLong as reason:
            blocks.append(f"── {sample.id}: rejected ({reason})")
            continue
        text = run.sub(lambda m: f"<image>×{len(m.group()) // len(encoder.image_token)}",
                       tokenizer.decode(encoded.input_ids))
        labels = [tokenizer.decode(segment) for segment in label_segments(encoded.input_ids, encoded.labels)]
        blocks.append("\n".join([
            f"── {sample.id} ({len(encoded.input_ids)} tokens{', truncated' if encoded.truncated else ''})",
            "prompt:", f"  {text!r}", "labels:", *[f"  {label!r}" for label in labels]]))
    return "\n".join(blocks)
