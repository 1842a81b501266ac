"""Model families: derived parts, image-token counts and inputs equal to transformers' own processor,
exact label masks with per-image blocks, multi-image samples through data, collate and forward."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medvlm.data.collate import IGNORE_INDEX, SupervisedDataset, sample_image_sizes
from medvlm.data.records import IMAGE_PLACEHOLDER, Turn
from medvlm.data.templates import get_template
from medvlm.errors import DataError, MedvlmError, ModelError
from medvlm.model.build import collator_for, encoder_for, image_tokens_for, preparer_for
from medvlm.model.families import family_of, get_family, resolve_family
from medvlm.model.tiny import build_tiny
from medvlm.runs.preview import label_segments
from tests.helpers.families import FAMILIES, conversation, picture, write_pictures

SIZES = [(32, 32), (40, 30), (100, 20), (20, 100), (64, 33), (77, 64)]


@pytest.fixture(scope="module", params=FAMILIES)
def tiny(request):
    model, processor = build_tiny("micro-clip-llama", family=request.param, template=get_family(request.param)
                                  .default_template)
    return request.param, model.eval(), processor


def test_every_family_has_the_three_components_and_derives_its_parts(tiny) -> None:
    name, model, _ = tiny
    family = family_of(model.config)
    assert family.name == name
    components = {family.component_of(n) for n, _ in model.named_parameters()}
    assert components == {"vision_tower", "projector", "language_model"}
    modules = dict(model.named_modules())
    assert all(skip in modules for skip in family.quantization_skip_modules())
    import re

    target = re.compile(family.lora_target_modules())
    adapted = [n for n, m in modules.items() if isinstance(m, torch.nn.Linear) and target.fullmatch(n)]
    assert len(adapted) == 7 * model.config.get_text_config().num_hidden_layers
    assert all(family.component_of(f"{n}.weight") == "language_model" for n in adapted)
    assert all(any(n.endswith(p) for n in modules) for p in family.projector_modules)


@pytest.mark.parametrize("width, height", SIZES)
def test_image_tokens_and_tensors_equal_the_transformers_processor(tiny, width: int, height: int) -> None:
    _, model, processor = tiny
    image = picture(width, height)
    tokens = image_tokens_for(model.config, processor)
    family = family_of(model.config)
    placeholder = family.image_placeholder(processor)
    theirs = processor(text=[f"look {placeholder} here"], images=[image], return_tensors="pt")
    token_id = processor.tokenizer.convert_tokens_to_ids(tokens.token)
    preparer = preparer_for(model.config, processor, "native")
    h, w = preparer.input_size(height, width)
    assert tokens.count((h, w)) == int((theirs["input_ids"] == token_id).sum())
    ours = preparer.prepare([image])
    assert set(ours) == {k for k in theirs if k not in ("input_ids", "attention_mask", "mm_token_type_ids",
                                                       "token_type_ids")} == set(family.image_inputs)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_anyres_and_dynamic_resolution_give_per_image_counts(tiny) -> None:
    name, model, processor = tiny
    preparer = preparer_for(model.config, processor, "native")
    counts = {image_tokens_for(model.config, processor).count(preparer.input_size(h, w)) for w, h in SIZES}
    assert (len(counts) > 1) == family_of(model.config).dynamic_resolution(), counts


def test_labels_are_exactly_the_replies_and_ids_equal_the_processors(tiny, tmp_path: Path) -> None:
    """The whole training sequence equals what transformers' processor makes of the same text and
    image (so the image block is right whatever its length), and only the replies are supervised."""
    name, model, processor = tiny
    family = family_of(model.config)
    template = get_template(family.default_template)
    sample = conversation(write_pictures(tmp_path, [(40, 24)]), tmp_path)
    encoder = encoder_for(model.config, processor, template, 4096)
    preparer = preparer_for(model.config, processor, "native")
    encoded = encoder.encode(sample, sample_image_sizes(sample, preparer))
    tokenizer = processor.tokenizer
    replies = [tokenizer.decode(segment) for segment in label_segments(encoded.input_ids, encoded.labels)]
    end = template.assistant_body("|", tokenizer.eos_token).split("|", 1)[1]  # what closes a reply
    assert [reply.lstrip(" ") for reply in replies] == ["A chest X-ray." + end, "Yes, in the left lung." + end]
    turns = [Turn("user", f"{IMAGE_PLACEHOLDER}\nWhat is shown?"), *sample.turns[1:]]
    text = template.render(turns, bos=tokenizer.bos_token, eos=tokenizer.eos_token).text
    theirs = processor(text=[text.replace(IMAGE_PLACEHOLDER, family.image_placeholder(processor))],
                       images=[picture(40, 24)], return_tensors="pt", add_special_tokens=False)
    assert encoded.input_ids == theirs["input_ids"][0].tolist()
    assert sum(label != IGNORE_INDEX for label in encoded.labels) == sum(
        len(tokenizer(reply, add_special_tokens=False)["input_ids"]) for reply in replies)


def test_multi_image_samples_collate_and_run(tiny, tmp_path: Path) -> None:
    """A study with two images of different sizes beside a one-image sample, in one batch: every
    image block is filled by its own image's features (the model checks the counts)."""
    name, model, processor = tiny
    family = family_of(model.config)
    two = conversation(write_pictures(tmp_path, [(40, 24), (24, 56)]), tmp_path, "two")
    if not family.multi_image:
        encoder = encoder_for(model.config, processor, get_template(family.default_template), 4096)
        with pytest.raises(DataError, match="2 images in one sample; this model family takes at most 1"):
            encoder.encode(two, [(24, 40), (56, 24)])
        return
    one = conversation(write_pictures(tmp_path / "..", [(32, 32)])[:1], tmp_path / "..", "one")
    encoder = encoder_for(model.config, processor, get_template(family.default_template), 4096)
    preparer = preparer_for(model.config, processor, "native")
    dataset = SupervisedDataset([two, one], encoder, preparer)
    assert len(dataset) == 2
    batch = collator_for(model.config, processor)([dataset[0], dataset[1]])
    token_id = encoder.image_token_id
    sizes = sample_image_sizes(two, preparer) + sample_image_sizes(one, preparer)
    tokens = image_tokens_for(model.config, processor)
    assert int((batch["input_ids"] == token_id).sum()) == sum(tokens.count(size) for size in sizes)
    with torch.no_grad():
        loss = model(**batch).loss
    assert torch.isfinite(loss)


def test_family_resolution_and_errors(tmp_path: Path) -> None:
    assert resolve_family("auto", None).name == "llava"
    with pytest.raises(MedvlmError, match="unknown model family 'llava_nxt'.*did you mean 'llava_next'"):
        get_family("llava_nxt")
    model, processor = build_tiny("micro-clip-llama", family="llava_next")
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert resolve_family("auto", tmp_path).name == "llava_next"
    with pytest.raises(ModelError, match="'llava_next' family, but the recipe says model.family=qwen2_5_vl"):
        resolve_family("qwen2_5_vl", tmp_path)
