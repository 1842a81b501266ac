"""Templates and label masks: decoded labels are exactly the assistant replies + end-of-turn."""

from __future__ import annotations

import pytest

from medvlm.data.collate import IGNORE_INDEX, ConversationEncoder, TooLong, expand_image_placeholders
from medvlm.data.records import Sample, SampleMeta, Turn
from medvlm.data.templates import Rendered, get_template
from medvlm.errors import DataError
from medvlm.runs.preview import label_segments

TURNS = [
    Turn("user", "What is shown?\n<image>"),  # placeholder after the question: moved to the front
    Turn("assistant", "A chest X-ray."),
    Turn("user", "Is there a lesion?"),
    Turn("assistant", "Yes, in the left lung."),
    Turn("user", "How large is it?"),
    Turn("assistant", "It is small."),
]
REPLIES = ["A chest X-ray.", "Yes, in the left lung.", "It is small."]


def sample(turns=TURNS, images=("img.png",)) -> Sample:
    return Sample(id="s1", turns=list(turns), meta=SampleMeta(dataset="t", split="train"), images=list(images))


def decoded_labels(tokenizer, encoded) -> list[str]:
    return [tokenizer.decode(seg) for seg in label_segments(encoded.input_ids, encoded.labels)]


@pytest.mark.parametrize("template, end", [("vicuna_v1", "</s>"), ("mistral_instruct", " </s>"),
                                           ("llava_med_legacy", "\n###")])
def test_multi_turn_labels_are_exactly_the_replies(tiny_model, template: str, end: str) -> None:
    _, processor = tiny_model
    encoder = ConversationEncoder(processor.tokenizer, get_template(template), image_token_count=16, max_length=512)
    encoded = encoder.encode(sample())
    assert [text.lstrip(" ") for text in decoded_labels(processor.tokenizer, encoded)] == \
        [reply + end for reply in REPLIES]
    # and nothing else is supervised: the label tokens are the reply tokens, no prompt token leaks in
    assert sum(label != IGNORE_INDEX for label in encoded.labels) == sum(
        len(processor.tokenizer(" " + r + end, add_special_tokens=False)["input_ids"]) for r in REPLIES)


def test_vicuna_rendering_matches_llava_layout(tiny_model) -> None:
    _, processor = tiny_model
    encoder = ConversationEncoder(processor.tokenizer, get_template("vicuna_v1"), 2, 512)
    text = processor.tokenizer.decode(encoder.encode(sample(TURNS[:4])).input_ids)
    system = get_template("vicuna_v1").default_system
    assert text == (f"<s>{system} USER: <image><image>\nWhat is shown? ASSISTANT: A chest X-ray.</s>"
                    "USER: Is there a lesion? ASSISTANT: Yes, in the left lung.</s>")


def test_plain_template_keeps_image_and_caption_only(tiny_model) -> None:
    _, processor = tiny_model
    encoder = ConversationEncoder(processor.tokenizer, get_template("plain"), 3, 512)
    caption = sample([Turn("user", "<image>\nDescribe the image."), Turn("assistant", "Axial CT of the brain.")])
    encoded = encoder.encode(caption)
    assert processor.tokenizer.decode(encoded.input_ids) == "<s><image><image><image>Axial CT of the brain.\n"
    assert decoded_labels(processor.tokenizer, encoded) == ["Axial CT of the brain.\n"]


def test_generation_prompt_is_a_prefix_of_the_training_text(tiny_model) -> None:
    _, processor = tiny_model
    for name in ("vicuna_v1", "mistral_instruct", "llava_med_legacy"):
        encoder = ConversationEncoder(processor.tokenizer, get_template(name), 16, 512)
        full = encoder.encode(sample(TURNS[:2])).input_ids
        prompt = encoder.encode_prompt(sample(TURNS[:2]))
        assert full[: len(prompt)] == prompt
        assert all(label == IGNORE_INDEX for label in encoder.encode(sample(TURNS[:2])).labels[: len(prompt)])


def test_masks_with_a_sentencepiece_llama_tokenizer() -> None:
    """The offsets approach also holds for a Llama-style (Metaspace) tokenizer, the 7B case."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Sequence([decoders.Metaspace(replacement="▁", prepend_scheme="first"),
                                     decoders.ByteFallback()])
    tok.normalizer = normalizers.NFKC()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>", "<image>", "<pad>"],
                                  show_progress=False)
    tok.train_from_iterator([t.text for t in TURNS] * 20 + ["USER: ASSISTANT: [INST] [/INST]"] * 20, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                        pad_token="<pad>", extra_special_tokens={"image_token": "<image>"})
    for name, end in (("vicuna_v1", "</s>"), ("mistral_instruct", " </s>")):  # the original's " </s>"
        encoder = ConversationEncoder(tokenizer, get_template(name), 4, 512)
        labels = [t.strip() for t in decoded_labels(tokenizer, encoder.encode(sample()))]
        assert labels == [reply + end for reply in REPLIES]


def test_chat_templates_render_like_the_renderer(tiny_model) -> None:
    _, processor = tiny_model
    tokenizer = processor.tokenizer
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is shown?"}]},
                {"role": "assistant", "content": "A chest X-ray."},
                {"role": "user", "content": "Is there a lesion?"}]
    turns = [Turn("user", "<image>\nWhat is shown?"), Turn("assistant", "A chest X-ray."),
             Turn("user", "Is there a lesion?")]
    for name in ("vicuna_v1", "mistral_instruct", "llava_med_legacy"):
        template = get_template(name)
        jinja = tokenizer.apply_chat_template(messages, chat_template=template.jinja(), tokenize=False,
                                              add_generation_prompt=True)
        ours = template.render(turns, bos=tokenizer.bos_token, eos=tokenizer.eos_token, add_generation_prompt=True)
        assert jinja == ours.text, name
    with_system = [{"role": "system", "content": "Be brief."}, *messages]
    mistral = get_template("mistral_instruct")
    assert tokenizer.apply_chat_template(with_system, chat_template=mistral.jinja(), tokenize=False) == \
        mistral.render(turns, bos="<s>", eos="</s>", system="Be brief.").text


def test_assistant_masks_from_generation_blocks(tiny_model) -> None:
    """The {% generation %} markers give transformers' own assistant mask the same tokens."""
    _, processor = tiny_model
    tokenizer = processor.tokenizer
    template = get_template("vicuna_v1")
    messages = [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello there."}]
    out = tokenizer.apply_chat_template(messages, chat_template=template.jinja(), tokenize=True,
                                        return_dict=True, return_assistant_tokens_mask=True)
    ids = [i for i, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
    assert tokenizer.decode(ids).strip() == "Hello there.</s>"


def test_over_long_sample_is_cut_on_text_keeping_image_tokens(tiny_model) -> None:
    _, processor = tiny_model
    encoder = ConversationEncoder(processor.tokenizer, get_template("vicuna_v1"), 16, max_length=512)
    full = encoder.encode(sample())
    image_end = max(i for i, t in enumerate(full.input_ids) if t == encoder.image_token_id)
    first_label = next(i for i, lab in enumerate(full.labels) if lab != IGNORE_INDEX)
    limit = first_label + 3
    cut = ConversationEncoder(processor.tokenizer, get_template("vicuna_v1"), 16, max_length=limit).encode(sample())
    assert cut.truncated and len(cut.input_ids) == limit
    assert cut.input_ids == full.input_ids[:limit] and cut.labels == full.labels[:limit]
    assert sum(t == encoder.image_token_id for t in cut.input_ids) == 16 and image_end < limit


def test_sample_whose_image_tokens_do_not_fit_is_rejected(tiny_model) -> None:
    _, processor = tiny_model
    encoder = ConversationEncoder(processor.tokenizer, get_template("vicuna_v1"), 16, max_length=10)
    with pytest.raises(TooLong, match="image tokens end at position"):
        encoder.encode(sample())


def test_placeholder_count_mismatch_is_a_data_error(tiny_model) -> None:
    _, processor = tiny_model
    encoder = ConversationEncoder(processor.tokenizer, get_template("vicuna_v1"), 4, 512)
    two_images_one_placeholder = sample(images=("a.png", "b.png"))
    with pytest.raises(DataError, match="1 <image> placeholder\\(s\\) for 2 image\\(s\\)"):
        encoder.encode(two_images_one_placeholder)
    text_only = sample([Turn("user", "Hi"), Turn("assistant", "Hello")], images=())
    assert encoder.image_token_id not in encoder.encode(text_only).input_ids


def test_expand_placeholders_shifts_spans() -> None:
    rendered = Rendered("A<image>B<image>CD", [(8, 9), (17, 18)])
    out = expand_image_placeholders(rendered, "<i><i>")
    assert out.text == "A<i><i>B<i><i>CD"
    assert [out.text[s:e] for s, e in out.supervised] == ["B", "D"]


def test_conversations_must_alternate() -> None:
    with pytest.raises(DataError, match="turn 1 is from 'user'"):
        get_template("vicuna_v1").render([Turn("user", "a"), Turn("user", "b")])
