"""Conversation templates: text layout, the spans that carry loss, and the matching chat template.

A template turns a conversation into one string and records the character spans of what the model
must learn to say (each assistant reply with its end-of-turn marker). The collator tokenises that
string once and labels exactly the tokens inside those spans, so turn boundaries cannot drift the
way they do when segments are tokenised separately (the original LLaVA code's multi-turn bug).

Each template also has a Jinja chat template that renders the same text, saved with exported
models so plain ``transformers`` reproduces medvlm's prompts.

Layouts (``{bos}``/``{eos}`` are the tokenizer's own tokens). Names, system prompts and separators
are those of the original LLaVA code's ``llava/conversation.py`` (``llava-torch`` 1.2.2, which
LLaVA-Med v1.5 shares), checked against it by ``tests/reference/original_llava.py``:

* ``plain`` (stage 1): ``{bos}<image>`` + caption + ``\\n``; the instruction is dropped.
* ``vicuna_v1`` (LLaVA-1.5, ``--version v1``): ``{bos}{system} USER: {q} ASSISTANT: {a}{eos}USER: ...``
  with "A chat between a curious user ... the user's questions".
* ``llava_v1``: the same layout with "A chat between a curious human ... the human's questions".
* ``mistral_instruct`` (LLaVA-Med v1.5): ``{bos}[INST] {q} [/INST] {a} {eos}[INST] ...`` (the
  original's Llama-2 separator style: a space before the end-of-turn token); a system prompt, when
  given, is wrapped as Llama 2 wraps it (``<<SYS>>\\n{system}\\n<</SYS>>\\n\\n``) into the first question.
* ``llava_med_legacy`` (LLaVA-Med v1.0, "###" separators; not in the original LLaVA package):
  ``{system}\\n\\n### Human: {q}\\n### Assistant: {a}\\n### Human: ...``
* ``chatml`` (Qwen2-VL / Qwen2.5-VL; LLaVA-OneVision's ``qwen_1_5``):
  ``{bos}<|im_start|>system\\n{system}<|im_end|>\\n`` then per exchange
  ``<|im_start|>user\\n{q}<|im_end|>\\n<|im_start|>assistant\\n{a}<|im_end|>\\n``
* ``gemma`` (Gemma 3, MedGemma; no system role: the system text opens the first question):
  ``{bos}<start_of_turn>user\\n{q}<end_of_turn>\\n<start_of_turn>model\\n{a}<end_of_turn>\\n``

The original code tokenises the prompt in chunks, split at each ``<image>`` (bos, then each chunk
on its own), so a sentencepiece tokenizer's dummy prefix ("▁") starts the text after the bos token
and after every image. transformers' non-legacy Llama tokenizer puts it only at the very start of a
text; a space at those places brings it back. :func:`chunk_gap` finds out from the tokenizer, and
both the Python rendering and the chat template put it there (not in chatml or gemma, native
layouts that were never tokenised in chunks).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from medvlm import registry
from medvlm.data.records import IMAGE_PLACEHOLDER, Turn
from medvlm.errors import DataError
from medvlm.registry import Registry

VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the user's questions.")
LLAVA_V1_SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. "
                   "The assistant gives helpful, detailed, and polite answers to the human's questions.")
LLAVA_MED_SYSTEM = (
    "You are LLaVA-Med, a large language and vision assistant trained by a group of researchers at "
    "Microsoft, based on the general domain LLaVA architecture. You are able to understand the visual "
    "content that the user provides, and assist the user with a variety of medical and clinical tasks "
    "using natural language. Follow the instructions carefully and explain your answers in detail.")


@dataclass
class Rendered:
    text: str
    supervised: list[tuple[int, int]] = field(default_factory=list)  # [start, end) character spans


class _Builder:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.length = 0
        self.spans: list[tuple[int, int]] = []

    def add(self, text: str, supervised: bool = False) -> None:
        if supervised and text:
            self.spans.append((self.length, self.length + len(text)))
        self.parts.append(text)
        self.length += len(text)

    def build(self) -> Rendered:
        return Rendered("".join(self.parts), self.spans)


def _content_macro(gap: str) -> str:
    """Jinja macro rendering message content (a string, or a list of {"type": image|text} parts); the
    text after each ``<image>`` starts with ``gap`` (see :func:`chunk_gap`), as :func:`gap_images` does."""
    return (
        "{%- macro content(m) -%}"
        "{%- if m['content'] is string -%}"
        "{%- for piece in m['content'].split('<image>') -%}"
        "{%- if not loop.first -%}{{ '<image>' }}{%- if piece -%}{{ " + repr(gap) + " }}{%- endif -%}{%- endif -%}"
        "{{ piece }}{%- endfor -%}"
        "{%- else -%}{%- for part in m['content'] -%}"
        "{%- if part['type'] == 'image' -%}{{ " + repr(IMAGE_PLACEHOLDER + gap + "\n") + " }}"
        "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
        "{%- endfor -%}{%- endif -%}"
        "{%- endmacro -%}"
    )


def _bos(gap: str) -> str:
    """Jinja: the bos token, then ``gap`` (text follows it)."""
    return "{{ bos_token }}{%- if bos_token -%}{{ " + repr(gap) + " }}{%- endif -%}"


def gap_images(text: str, gap: str) -> str:
    """``text`` with ``gap`` after each ``<image>`` that text follows (not another image, not the end)."""
    if not gap:
        return text
    pieces = text.split(IMAGE_PLACEHOLDER)
    return pieces[0] + "".join(IMAGE_PLACEHOLDER + (gap if piece else "") + piece for piece in pieces[1:])


@dataclass(frozen=True)
class Template:
    """A conversation layout. Subclasses fill in the three pieces of text around each turn.

    ``gap`` (see :func:`chunk_gap`) starts every text run the original code tokenised on its own: the
    text after the bos token and after each ``<image>``.
    """

    name: str
    default_system: str | None = None
    stop_strings: tuple[str, ...] = ()

    # -- text pieces -------------------------------------------------------------------------------
    def prefix(self, bos: str, system: str | None, gap: str) -> str:
        raise NotImplementedError

    def user(self, text: str, gap: str) -> str:
        """The user turn around ``text`` (whose images already carry their gap)."""
        raise NotImplementedError

    def assistant_header(self) -> str:
        raise NotImplementedError

    def assistant_body(self, text: str, eos: str) -> str:
        raise NotImplementedError

    def jinja(self, system: str | None = None, gap: str = "") -> str:
        """The chat template's Jinja source; ``system`` (None: the template's default) is used when the
        messages bring none."""
        raise NotImplementedError

    # -- rendering ---------------------------------------------------------------------------------
    def render(self, turns: list[Turn], *, bos: str = "", eos: str = "", system: str | None = None,
               add_generation_prompt: bool = False, gap: str = "") -> Rendered:
        """Render ``turns``; assistant bodies are supervised spans.

        With ``add_generation_prompt`` the text ends where the model's next reply would start.
        """
        _check_alternation(turns)
        out = _Builder()
        out.add(self.prefix(bos, self.default_system if system is None else system, gap if bos else ""))
        for turn in turns:
            if turn.role == "user":
                out.add(self.user(gap_images(turn.text, gap), gap))
            else:
                out.add(self.assistant_header())
                out.add(self.assistant_body(turn.text, eos), supervised=True)
        if add_generation_prompt:
            out.add(self.assistant_header())
        return out.build()

    def chat_template(self, system: str | None = None, gap: str = "") -> str:
        """The Jinja chat template saved with a model: ``system`` is its default system prompt (None: the
        template's own)."""
        return self.jinja(system, gap)


def _check_alternation(turns: list[Turn]) -> None:
    for index, turn in enumerate(turns):
        expected = "user" if index % 2 == 0 else "assistant"
        if turn.role != expected:
            raise DataError(f"turn {index} is from '{turn.role}', expected '{expected}' "
                            "(conversations alternate user/assistant and start with the user)")


@dataclass(frozen=True)
class Plain(Template):
    """Stage-1 alignment: image tokens then the caption; the instruction text is dropped."""

    stop_strings: tuple[str, ...] = ("\n",)

    def render(self, turns: list[Turn], **kwargs) -> Rendered:  # type: ignore[override]
        if len(turns) > 2:
            raise DataError("the 'plain' template takes one image-caption pair, got "
                            f"{len(turns)} turns; use a conversation template for multi-turn data")
        return super().render(turns, **kwargs)

    def prefix(self, bos: str, system: str | None, gap: str) -> str:
        return bos  # the image follows: no gap

    def user(self, text: str, gap: str) -> str:
        images = text.count(IMAGE_PLACEHOLDER)
        return IMAGE_PLACEHOLDER * images + (gap if images else "")  # the caption follows the images

    def assistant_header(self) -> str:
        return ""

    def assistant_body(self, text: str, eos: str) -> str:
        return text + "\n"

    def jinja(self, system: str | None = None, gap: str = "") -> str:
        return (
            _content_macro("") + "{{ bos_token }}"
            "{%- for m in messages -%}"
            "{%- if m['role'] == 'user' -%}"
            "{%- set images = content(m).count('<image>') -%}{{ '<image>' * images }}"
            "{%- if images -%}{{ " + repr(gap) + " }}{%- endif -%}"
            "{%- elif m['role'] == 'assistant' -%}"
            "{% generation %}{{ content(m) }}{{ '\\n' }}{% endgeneration %}"
            "{%- endif -%}{%- endfor -%}"
        )


@dataclass(frozen=True)
class VicunaV1(Template):
    """The original's ``SeparatorStyle.TWO`` with ``sep=" "``, ``sep2=eos`` (``vicuna_v1``, ``llava_v1``)."""

    default_system: str | None = VICUNA_SYSTEM

    def prefix(self, bos: str, system: str | None, gap: str) -> str:
        return f"{bos}{gap}{system} " if system else bos + gap

    def user(self, text: str, gap: str) -> str:
        return f"USER: {text} "

    def assistant_header(self) -> str:
        return "ASSISTANT:"

    def assistant_body(self, text: str, eos: str) -> str:
        return f" {text}{eos}"

    def jinja(self, system: str | None = None, gap: str = "") -> str:
        system = (self.default_system if system is None else system) or ""
        return (
            _content_macro(gap) + _bos(gap) +
            "{%- if messages[0]['role'] == 'system' -%}{%- set system = content(messages[0]) -%}"
            "{%- set loop_messages = messages[1:] -%}"
            "{%- else -%}{%- set system = " + repr(system) + " -%}"
            "{%- set loop_messages = messages -%}{%- endif -%}"
            "{%- if system -%}{{ system + ' ' }}{%- endif -%}"
            "{%- for m in loop_messages -%}"
            "{%- if m['role'] == 'user' -%}{{ 'USER: ' + content(m) + ' ' }}"
            "{%- else -%}{{ 'ASSISTANT:' }}"
            "{% generation %}{{ ' ' + content(m) + eos_token }}{% endgeneration %}"
            "{%- endif -%}{%- endfor -%}"
            "{%- if add_generation_prompt -%}{{ 'ASSISTANT:' }}{%- endif -%}"
        )


@dataclass(frozen=True)
class MistralInstruct(Template):
    """The original's ``SeparatorStyle.LLAMA_2`` with ``sep=""``, ``sep2=eos`` (``mistral_instruct``)."""

    default_system: str | None = ""

    def prefix(self, bos: str, system: str | None, gap: str) -> str:
        return bos + gap

    def render(self, turns: list[Turn], *, system: str | None = None, **kwargs) -> Rendered:  # type: ignore[override]
        system = self.default_system if system is None else system
        if system:  # no system role: wrapped into the first question, as the original's Llama-2 style does
            first = turns[0]
            turns = [Turn(first.role, f"<<SYS>>\n{system}\n<</SYS>>\n\n{first.text}"), *turns[1:]]
        return super().render(turns, system="", **kwargs)

    def user(self, text: str, gap: str) -> str:
        return f"[INST] {text} [/INST]"

    def assistant_header(self) -> str:
        return ""

    def assistant_body(self, text: str, eos: str) -> str:
        return f" {text} {eos}"

    def jinja(self, system: str | None = None, gap: str = "") -> str:
        return (
            _content_macro(gap) + _bos(gap) +
            "{%- if messages[0]['role'] == 'system' -%}"
            "{%- set system = content(messages[0]) -%}{%- set loop_messages = messages[1:] -%}"
            "{%- else -%}{%- set system = " + repr(self.default_system if system is None else system) + " -%}"
            "{%- set loop_messages = messages -%}"
            "{%- endif -%}"
            "{%- if system -%}{%- set system = '<<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n' -%}{%- endif -%}"
            "{%- for m in loop_messages -%}"
            "{%- if m['role'] == 'user' -%}"
            "{{ '[INST] ' + (system if loop.first else '') + content(m) + ' [/INST]' }}"
            "{%- elif m['role'] == 'assistant' -%}"
            "{% generation %}{{ ' ' + content(m) + ' ' + eos_token }}{% endgeneration %}"
            "{%- endif -%}{%- endfor -%}"
        )


@dataclass(frozen=True)
class LlavaMedLegacy(Template):
    """LLaVA v0 / LLaVA-Med v1 layout: the model learns to end each reply with ``\\n###``."""

    default_system: str | None = LLAVA_MED_SYSTEM
    stop_strings: tuple[str, ...] = ("###",)

    def prefix(self, bos: str, system: str | None, gap: str) -> str:
        return f"{bos}{gap}{system}\n\n###"

    def user(self, text: str, gap: str) -> str:
        return f" Human: {text}\n###"

    def assistant_header(self) -> str:
        return " Assistant:"

    def assistant_body(self, text: str, eos: str) -> str:
        return f" {text}\n###"

    def jinja(self, system: str | None = None, gap: str = "") -> str:
        return (
            _content_macro(gap) + _bos(gap) +
            "{%- if messages[0]['role'] == 'system' -%}{%- set system = content(messages[0]) -%}"
            "{%- set loop_messages = messages[1:] -%}"
            "{%- else -%}{%- set system = " + repr(self.default_system if system is None else system) + " -%}"
            "{%- set loop_messages = messages -%}{%- endif -%}"
            "{{ system + '\\n\\n###' }}"
            "{%- for m in loop_messages -%}"
            "{%- if m['role'] == 'user' -%}{{ ' Human: ' + content(m) + '\\n###' }}"
            "{%- else -%}{{ ' Assistant:' }}"
            "{% generation %}{{ ' ' + content(m) + '\\n###' }}{% endgeneration %}"
            "{%- endif -%}{%- endfor -%}"
            "{%- if add_generation_prompt -%}{{ ' Assistant:' }}{%- endif -%}"
        )


def expand_image_placeholders(rendered: Rendered, replacement: str | list[str]) -> Rendered:
    """Replace each ``<image>`` by ``replacement`` (one text for all, or one per placeholder in
    order), shifting the supervised spans to match."""
    if IMAGE_PLACEHOLDER not in rendered.text or replacement == IMAGE_PLACEHOLDER:
        return rendered
    pieces = rendered.text.split(IMAGE_PLACEHOLDER)
    replacements = [replacement] * (len(pieces) - 1) if isinstance(replacement, str) else replacement
    if len(replacements) != len(pieces) - 1:
        raise DataError(f"{len(pieces) - 1} <image> placeholder(s) for {len(replacements)} image block(s)")
    placeholder_starts, growths, position = [], [], 0
    for piece, text in zip(pieces[:-1], replacements, strict=True):
        position += len(piece)
        placeholder_starts.append(position)
        growths.append(len(text) - len(IMAGE_PLACEHOLDER))
        position += len(IMAGE_PLACEHOLDER)

    def shift(offset: int) -> int:
        return offset + sum(growth for start, growth in zip(placeholder_starts, growths, strict=True)
                            if start < offset)

    text = pieces[0] + "".join(block + piece for block, piece in zip(replacements, pieces[1:], strict=True))
    return Rendered(text, [(shift(s), shift(e)) for s, e in rendered.supervised])


def chunk_gap(tokenizer, image_token: str = IMAGE_PLACEHOLDER) -> str:
    """What must start a text run after ``<image>`` or the bos token (``" "`` or ``""``) for it to
    tokenise as the original LLaVA code tokenised it: on its own (``tokenizer_image_token`` splits
    the prompt at each ``<image>`` and tokenises every chunk separately, bos first).

    A sentencepiece tokenizer puts its dummy prefix ("▁") at the start of each such chunk. Its
    transformers 5 (non-legacy) version puts it only at the start of the whole text, not after a
    special token; a space there brings it back. Byte-level tokenizers and legacy ones (prefix after
    every special token) need nothing.
    """
    if image_token not in tokenizer.get_vocab():
        return ""
    probe = "\nA"
    alone = tokenizer(probe, add_special_tokens=False)["input_ids"]
    for gap in ("", " "):
        if tokenizer(image_token + gap + probe, add_special_tokens=False)["input_ids"][1:] == alone:
            return gap
    return ""


@dataclass(frozen=True)
class TurnMarkers(Template):
    """Layouts that wrap every turn in start/end markers (ChatML, Gemma): ``{start}{role}\n{text}{end}\n``.

    The reply, its end marker and the newline after it are supervised, so the model learns to close
    its turn; generation stops at the end marker.
    """

    start: str = ""
    end: str = ""
    user_role: str = "user"
    assistant_role: str = "assistant"
    system_role: str | None = "system"  # None: the system text opens the first question

    def render(self, turns: list[Turn], *, system: str | None = None, gap: str = "",  # type: ignore[override]
               **kwargs) -> Rendered:
        """``gap`` is ignored: these native layouts were never tokenised in chunks (see :func:`chunk_gap`)."""
        system = self.default_system if system is None else system
        if system and self.system_role is None:
            first = turns[0]
            turns = [Turn(first.role, f"{system}\n\n{first.text}"), *turns[1:]]
            system = ""
        return super().render(turns, system=system, **kwargs)

    def prefix(self, bos: str, system: str | None, gap: str) -> str:
        if system and self.system_role is not None:
            return f"{bos}{self.start}{self.system_role}\n{system}{self.end}\n"
        return bos

    def user(self, text: str, gap: str) -> str:
        return f"{self.start}{self.user_role}\n{text}{self.end}\n"

    def assistant_header(self) -> str:
        return f"{self.start}{self.assistant_role}\n"

    def assistant_body(self, text: str, eos: str) -> str:
        return f"{text}{self.end}\n"

    def jinja(self, system: str | None = None, gap: str = "") -> str:
        default_system = self.default_system if system is None else system
        user, assistant, close = (repr(f"{self.start}{self.user_role}\n"), repr(f"{self.start}{self.assistant_role}\n"),
                                  repr(f"{self.end}\n"))
        if self.system_role is None:
            default = f"{default_system}\n\n" if default_system else ""
            setup = ("{%- if messages[0]['role'] == 'system' -%}"
                     "{%- set system = content(messages[0]) + '\\n\\n' -%}{%- set loop_messages = messages[1:] -%}"
                     "{%- else -%}{%- set system = " + repr(default) + " -%}"
                     "{%- set loop_messages = messages -%}{%- endif -%}")
            first_user = "(system if loop.first else '')"
        else:
            setup = ("{%- if messages[0]['role'] == 'system' -%}{%- set system = content(messages[0]) -%}"
                     "{%- set loop_messages = messages[1:] -%}"
                     "{%- else -%}{%- set system = " + repr(default_system or "") + " -%}"
                     "{%- set loop_messages = messages -%}{%- endif -%}"
                     "{%- if system -%}{{ " + repr(f"{self.start}{self.system_role}\n") + " + system + " + close
                     + " }}{%- endif -%}")
            first_user = "''"
        return (
            _content_macro("") + "{{ bos_token }}" + setup
            + "{%- for m in loop_messages -%}"
            "{%- if m['role'] == 'user' -%}{{ " + user + " + " + first_user + " + content(m) + " + close + " }}"
            "{%- else -%}{{ " + assistant + " }}"
            "{% generation %}{{ content(m) + " + close + " }}{% endgeneration %}"
            "{%- endif -%}{%- endfor -%}"
            "{%- if add_generation_prompt -%}{{ " + assistant + " }}{%- endif -%}"
        )


QWEN_SYSTEM = "You are a helpful assistant."

TEMPLATES: Registry[Template] = registry.TEMPLATES
for _template in (Plain("plain"), VicunaV1("vicuna_v1"), VicunaV1("llava_v1", default_system=LLAVA_V1_SYSTEM),
                  MistralInstruct("mistral_instruct"), LlavaMedLegacy("llava_med_legacy"),
                  TurnMarkers("chatml", default_system=QWEN_SYSTEM, stop_strings=("<|im_end|>",),
                              start="<|im_start|>", end="<|im_end|>"),
                  TurnMarkers("gemma", default_system="", stop_strings=("<end_of_turn>",),
                              start="<start_of_turn>", end="<end_of_turn>", assistant_role="model",
                              system_role=None)):
    TEMPLATES.register(_template.name)(_template)


def get_template(name: str) -> Template:
    return TEMPLATES.get(name)
