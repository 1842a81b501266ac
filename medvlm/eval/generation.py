"""One generation path for ``predict``, ``chat`` and ``serve``.

A question answered by ``medvlm serve`` at temperature 0 must get exactly the answer ``medvlm
predict`` writes for it, so all three build prompts and decode here: the template renders the turns
(:class:`~medvlm.data.collate.ConversationEncoder`, the same one training uses), images become pixels
through the same :class:`~medvlm.data.images.ImagePreparer`, prompts are left-padded into one batch
with a KV cache, and each row's text is cut at the template's stop strings and stripped.

Rows of a batch may differ in token budget and stop strings, and their text can be streamed while
the batch runs: a per-row stopping criterion (transformers calls it after every new token) ends a
row at its own limit, at a stop string or when its listener cancels it, and hands it the text that
is certainly final. Ending a row early never changes the other rows' tokens.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from transformers import StoppingCriteria, StoppingCriteriaList

from medvlm.data.collate import ConversationEncoder, load_sample_images, sample_image_sizes
from medvlm.data.image_inputs import concat_image_tensors
from medvlm.data.images import AspectMode
from medvlm.data.records import Sample
from medvlm.data.templates import get_template
from medvlm.model.build import collator_for, encoder_for, preparer_for

#: ``listener(delta, done)``: new final text of one row; ``done`` once, with the last piece.
Listener = Callable[[str, bool], None]


@dataclass(frozen=True)
class Sampling:
    """Decoding settings shared by one batch; temperature 0 is greedy decoding."""

    temperature: float = 0.0
    top_p: float = 1.0

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def generate_kwargs(self) -> dict[str, Any]:
        if self.greedy:
            return {"do_sample": False}
        return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p}


@dataclass
class GenerationItem:
    """One prompt of a batch: token ids, its image tensors (``pixel_values`` with one entry per image
    and the model family's extras such as ``image_sizes``; None without images) and its own limits."""

    input_ids: list[int]
    pixels: dict[str, torch.Tensor] | None
    max_new_tokens: int
    stops: tuple[str, ...] = ()
    cancelled: Callable[[], bool] | None = None


@dataclass(frozen=True)
class Generated:
    """A row's answer, its token count and why it ended (OpenAI's ``stop`` or ``length``)."""

    text: str
    completion_tokens: int
    finish_reason: str


def trim_at_stop(text: str, stops: tuple[str, ...]) -> str:
    """The answer: text before the first stop string, stripped."""
    for stop in stops:
        if stop in text:
            text = text[: text.index(stop)]
    return text.strip()


@dataclass
class TextStream:
    """Turns the growing decoded text of one row into deltas that never need taking back.

    Held back until more text decides them: a tail that may start a stop string, trailing
    whitespace (the final answer is stripped) and an incomplete multi-byte character. The deltas
    add up to exactly :func:`trim_at_stop` of the full text.
    """

    stops: tuple[str, ...]
    sent: str = ""
    done: bool = False

    def update(self, text: str) -> str:
        """Delta for the text so far; sets ``done`` when a stop string appeared."""
        if any(stop in text for stop in self.stops):
            self.done = True
            return self.finish(text)
        hold = max((k for stop in self.stops for k in range(1, len(stop)) if text.endswith(stop[:k])), default=0)
        visible = text[: len(text) - hold]
        if visible.endswith("\ufffd"):
            visible = visible[:-1]
        return self._delta(visible.strip())

    def finish(self, text: str) -> str:
        self.done = True
        return self._delta(trim_at_stop(text, self.stops))

    def _delta(self, visible: str) -> str:
        if not visible.startswith(self.sent) or len(visible) <= len(self.sent):
            return ""
        delta = visible[len(self.sent):]
        self.sent = visible
        return delta


class _RowStops(StoppingCriteria):
    """Per-row end of generation (token budget, stop string, cancellation) and streaming."""

    def __init__(self, generator: Generator, items: list[GenerationItem], prompt_length: int,
                 listeners: list[Listener | None]) -> None:
        self.generator = generator
        self.items = items
        self.prompt_length = prompt_length
        self.listeners = listeners
        self.streams = [TextStream(item.stops) for item in items]
        self.finished = [False] * len(items)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        new = input_ids[:, self.prompt_length:].tolist()
        for row, item in enumerate(self.items):
            if self.finished[row]:
                done[row] = True
                continue
            tokens = self.generator.own_tokens(new[row], item.max_new_tokens)
            ended = len(tokens) < len(new[row]) or len(tokens) >= item.max_new_tokens
            stream, listener = self.streams[row], self.listeners[row]
            delta = ""
            if listener is not None or item.stops:  # decoding is only needed to stream or to find stops
                text = self.generator.decode(tokens)
                delta = stream.finish(text) if ended else stream.update(text)
            elif ended:
                stream.done = True
            cancelled = item.cancelled is not None and item.cancelled()
            if stream.done or cancelled:
                self.finished[row] = done[row] = True
            if listener is not None and (delta or self.finished[row]):
                listener(delta, self.finished[row])
        return done


class Generator:
    """A model, its processor and a conversation template, ready to answer batches of prompts."""

    def __init__(self, model, processor, template: str = "vicuna_v1", system_prompt: str | None = None,
                 image_aspect_ratio: AspectMode = "pad") -> None:
        self.model = model.eval()
        self.processor = processor
        self.template = get_template(template)
        self.tokenizer = processor.tokenizer
        self.encoder = encoder_for(model.config, processor, self.template, max_length=1 << 30,
                                   system_prompt=system_prompt)
        self.preparer = preparer_for(model.config, processor, image_aspect_ratio)
        self.collate = collator_for(model.config, processor, padding_side="left")
        configured = model.generation_config.eos_token_id  # one id, or a list (Qwen2.5-VL, Gemma 3)
        self.eos = sorted({token for token in [self.tokenizer.eos_token_id,
                                               *(configured if isinstance(configured, list) else [configured])]
                           if token is not None})
        self.device = next(model.parameters()).device
        self._encoders = {system_prompt: self.encoder}
        # A fast tokenizer must not encode in one thread while it decodes in another ("Already borrowed"):
        # the server tokenises prompts in request threads while its engine decodes.
        self._tokenizer_lock = threading.Lock()

    def encoder_for(self, system: str | None) -> ConversationEncoder:
        """The encoder with another system prompt (``None``: the generator's own; ``""``: none)."""
        if system is None:
            return self.encoder
        encoder = self._encoders.get(system)
        if encoder is None:
            encoder = ConversationEncoder(self.tokenizer, self.template, self.encoder.image_tokens,
                                          max_length=1 << 30, system_prompt=system)
            if len(self._encoders) < 32:  # clients may send any system prompt: keep a few, not all
                self._encoders[system] = encoder
        return encoder

    @property
    def stops(self) -> tuple[str, ...]:
        return self.template.stop_strings

    def prompt_ids(self, sample: Sample, system: str | None = None,
                   images: list[Image.Image] | None = None) -> list[int]:
        """Prompt tokens for the reply to the sample's last user turn.

        Families whose image blocks depend on the image size (AnyRes, dynamic resolution) read the
        sizes from ``images`` (decoded already: chat, server) or else from the sample's image files.
        """
        sizes = None
        if self.encoder.image_tokens.needs_sizes and (images or sample.images):
            sizes = ([self.preparer.input_size(image.height, image.width) for image in images] if images
                     else sample_image_sizes(sample, self.preparer))
        with self._tokenizer_lock:
            return self.encoder_for(system).encode_prompt(sample, sizes)

    def sample_pixels(self, sample: Sample) -> dict[str, torch.Tensor] | None:
        return load_sample_images(sample, self.preparer) if sample.has_image else None

    def image_pixels(self, images: list[Image.Image]) -> dict[str, torch.Tensor] | None:
        return concat_image_tensors([self.preparer.prepare([image]) for image in images]) if images else None

    def own_tokens(self, tokens: list[int], limit: int) -> list[int]:
        """A row's generated tokens up to its end-of-sequence token and its own budget."""
        for index, token in enumerate(tokens[:limit]):
            if token in self.eos:
                return tokens[:index]
        return tokens[:limit]

    def decode(self, tokens: list[int]) -> str:
        with self._tokenizer_lock:
            return self.tokenizer.decode(tokens, skip_special_tokens=True)

    @torch.inference_mode()
    def generate(self, items: list[GenerationItem], sampling: Sampling = Sampling(),
                 listeners: list[Listener | None] | None = None) -> list[Generated]:
        """Final answers of one batch (``listeners[i]`` gets row ``i``'s text as it grows)."""
        listeners = listeners or [None] * len(items)
        features = []
        for item in items:
            feature: dict[str, Any] = {"input_ids": torch.tensor(item.input_ids)}
            if item.pixels is not None:
                feature.update(item.pixels)
            features.append(feature)
        inputs = {key: value.to(self.device) for key, value in self.collate(features).items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        prompt_length = inputs["input_ids"].shape[1]
        rows = _RowStops(self, items, prompt_length, listeners)
        generated = self.model.generate(
            **inputs, **sampling.generate_kwargs(), num_beams=1, use_cache=True,
            max_new_tokens=max(item.max_new_tokens for item in items), pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.eos, stopping_criteria=StoppingCriteriaList([rows]))
        new = generated[:, prompt_length:].tolist()
        answers = []
        for row, item in enumerate(items):
            tokens = self.own_tokens(new[row], item.max_new_tokens)
            raw = self.decode(tokens)
            text = trim_at_stop(raw, item.stops)
            if not rows.finished[row] and listeners[row] is not None:  # generation ended before the row did
                listeners[row](rows.streams[row].finish(raw), True)  # type: ignore[misc]
            hit_limit = len(tokens) >= item.max_new_tokens and not any(stop in raw for stop in item.stops)
            answers.append(Generated(text, len(tokens), "length" if hit_limit else "stop"))
        return answers

