"""``medvlm data preview``: what the model will actually see, and what it is trained to say.

Prints, for the first samples of a recipe's training data, the rendered prompt (image tokens
collapsed to ``<image>×N``) and the exact text of the supervised label tokens, decoded from the
token ids — the quickest way to catch a wrong template or a masking mistake before a long run.
"""

from __future__ import annotations

from medvlm.data.collate import IGNORE_INDEX, ConversationEncoder, TooLong
from medvlm.data.reading import read_samples
from medvlm.data.templates import get_template
from medvlm.model.build import check_llava_dir, load_model, num_image_tokens
from medvlm.recipe import ModelSpec, load_recipe


def _tokenizer_and_config(spec: ModelSpec, template: str):
    """The tokenizer and model config a recipe's model has, without loading large weights."""
    if spec.preset or not spec.path:
        model, processor = load_model(spec, template)
        return processor.tokenizer, model.config
    from pathlib import Path

    from transformers import AutoConfig, AutoProcessor

    check_llava_dir(Path(spec.path))
    return AutoProcessor.from_pretrained(spec.path).tokenizer, AutoConfig.from_pretrained(spec.path)


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
    tokenizer, config = _tokenizer_and_config(recipe.model, recipe.data.template)
    image_tokens = num_image_tokens(config)
    encoder = ConversationEncoder(tokenizer, get_template(recipe.data.template), image_tokens,
                                  recipe.data.max_length, recipe.data.system_prompt)
    blocks = [f"template: {recipe.data.template} · {image_tokens} image tokens per image · "
              f"max_length {recipe.data.max_length}"]
    for sample in samples[:count]:
        try:
            encoded = encoder.encode(sample)
        except TooLong as reason:
            blocks.append(f"── {sample.id}: rejected ({reason})")
            continue
        text = tokenizer.decode(encoded.input_ids).replace(encoder.image_token * image_tokens,
                                                           f"<image>×{image_tokens}")
        labels = [tokenizer.decode(segment) for segment in label_segments(encoded.input_ids, encoded.labels)]
        blocks.append("\n".join([
            f"── {sample.id} ({len(encoded.input_ids)} tokens{', truncated' if encoded.truncated else ''})",
            "prompt:", f"  {text!r}", "labels:", *[f"  {label!r}" for label in labels]]))
    return "\n".join(blocks)
