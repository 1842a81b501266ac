"""Conversation templates: text layout, the spans that carry loss, and the matching chat template.

A template turns a conversation into one string and records the character spans of what the model
must learn to say (each assistant reply with its end-of-turn marker). The collator tokenises that
string once and labels exactly the tokens inside those spans, so turn boundaries cannot drift the
way they do when segments are tokenised separately (the original LLaVA code's multi-turn bug).

Each template also has a Jinja chat template that renders the same text, saved with exported
models so plain ``transformers`` reproduces medvlm's prompts.

Layouts (``{bos}``/``{eos}`` are the tokenizer's own tokens):

* ``plain`` (stage 1): ``{bos}<image>`` + caption + ``\\n``; the instruction is dropped.
* ``vicuna_v1`` (LLaVA-1.5): ``{bos}{system} USER: {q} ASSISTANT: {a}{eos}USER: ...``
* ``mistral_instruct`` (LLaVA-Med v1.5): ``{bos}[INST] {q} [/INST] {a}{eos}[INST] ...``
* ``llava_med_legacy`` (LLaVA / LLaVA-Med v1, "###" separators):
  ``{system}\\n\\n### Human: {q}\\n### Assistant: {a}\\n### Human: ...``
* ``chatml`` (Qwen2-VL / Qwen2.5-VL; LLaVA-OneVision's ``qwen_1_5``):
  ``{bos}<|im_start|>system\\n{system}<|im_end|>\\n`` then per exchange
  ``<|im_start|>user\\n{q}<|im_end|>\\n<|im_start|>assistant\\n{a}<|im_end|>\\n``
* ``gemma`` (Gemma 3, MedGemma; no system role: the system text opens the first question):
  ``{bos}<start_of_turn>user\\n{q}<end_of_turn>\\n<start_of_turn>model\\n{a}<end_of_turn>\\n``
"""

from __future__ import annotations

from dataclasses import dataclass, field

from medvlm.data.records import IMAGE_PLACEHOLDER, Turn
from medvlm.errors import DataError
from medvlm.registry import Registry

VICUNA_SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. "
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


# Shared Jinja pieces: message content may be a string or a list of {"type": image|text} parts.
_CONTENT_MACRO = (
    "{%- macro content(m) -%}"
    "{%- if m['content'] is string -%}{{ m['content'] }}"
    "{%- else -%}{%- for part in m['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{ '<image>\\n' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
)


@dataclass(frozen=True)
class Template:
    """A conversation layout. Subclasses fill in the three pieces of text around each turn."""

    name: str
    default_system: str | None = None
    stop_strings: tuple[str, ...] = ()

    # -- text pieces -------------------------------------------------------------------------------
    def prefix(self, bos: str, system: str | None) -> str:
        raise NotImplementedError

    def user(self, text: str) -> str:
        raise NotImplementedError

    def assistant_header(self) -> str:
        raise NotImplementedError

    def assistant_body(self, text: str, eos: str) -> str:
        raise NotImplementedError

    def jinja(self) -> str:
        raise NotImplementedError

    # -- rendering ---------------------------------------------------------------------------------
    def render(self, turns: list[Turn], *, bos: str = "", eos: str = "", system: str | None = None,
               add_generation_prompt: bool = False) -> Rendered:
        """Render ``turns``; assistant bodies are supervised spans.

        With ``add_generation_prompt`` the text ends where the model's next reply would start.
        """
        _check_alternation(turns)
        out = _Builder()
        out.add(self.prefix(bos, self.default_system if system is None else system))
        for turn in turns:
            if turn.role == "user":
                out.add(self.user(turn.text))
            else:
                out.add(self.assistant_header())
                out.add(self.assistant_body(turn.text, eos), supervised=True)
        if add_generation_prompt:
            out.add(self.assistant_header())
        return out.build()


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

    def prefix(self, bos: str, system: str | None) -> str:
        return bos

    def user(self, text: str) -> str:
        return IMAGE_PLACEHOLDER * text.count(IMAGE_PLACEHOLDER)

    def assistant_header(self) -> str:
        return ""

    def assistant_body(self, text: str, eos: str) -> str:
        return text + "\n"

    def jinja(self) -> str:
        return (
            _CONTENT_MACRO + "{{ bos_token }}"
            "{%- for m in messages -%}"
            "{%- if m['role'] == 'user' -%}"
            "{%- set text = content(m) -%}{{ '<image>' * (text.count('<image>')) }}"
            "{%- elif m['role'] == 'assistant' -%}"
            "{% generation %}{{ content(m) }}{{ '\\n' }}{% endgeneration %}"
            "{%- endif -%}{%- endfor -%}"
        )


@dataclass(frozen=True)
class VicunaV1(Template):
    default_system: str | None = VICUNA_SYSTEM

    def prefix(self, bos: str, system: str | None) -> str:
        return f"{bos}{system} " if system else bos

    def user(self, text: str) -> str:
        return f"USER: {text} "

    def assistant_header(self) -> str:
        return "ASSISTANT:"

    def assistant_body(self, text: str, eos: str) -> str:
        return f" {text}{eos}"

    def jinja(self) -> str:
        system = self.default_system or ""
        return (
            _CONTENT_MACRO + "{{ bos_token }}"
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
    default_system: str | None = ""

    def prefix(self, bos: str, system: str | None) -> str:
        return bos

    def render(self, turns: list[Turn], *, system: str | None = None, **kwargs) -> Rendered:  # type: ignore[override]
        if system:  # Mistral has no system role: prepend it to the first question, as LLaVA-Med does
            first = turns[0]
            turns = [Turn(first.role, f"{system}\n\n{first.text}"), *turns[1:]]
        return super().render(turns, system="", **kwargs)

    def user(self, text: str) -> str:
        return f"[INST] {text} [/INST]"

    def assistant_header(self) -> str:
        return ""

    def assistant_body(self, text: str, eos: str) -> str:
        return f" {text}{eos}"

    def jinja(self) -> str:
        return (
            _CONTENT_MACRO + "{{ bos_token }}"
            "{%- if messages[0]['role'] == 'system' -%}"
            "{%- set system = content(messages[0]) + '\\n\\n' -%}{%- set loop_messages = messages[1:] -%}"
            "{%- else -%}{%- set system = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
            "{%- for m in loop_messages -%}"
            "{%- if m['role'] == 'user' -%}"
            "{{ '[INST] ' + (system if loop.first else '') + content(m) + ' [/INST]' }}"
            "{%- elif m['role'] == 'assistant' -%}"
            "{% generation %}{{ ' ' + content(m) + eos_token }}{% endgeneration %}"
            "{%- endif -%}{%- endfor -%}"
        )


@dataclass(frozen=True)
class LlavaMedLegacy(Template):
    """LLaVA v0 / LLaVA-Med v1 layout: the model learns to end each reply with ``\\n###``."""

    default_system: str | None = LLAVA_MED_SYSTEM
    stop_strings: tuple[str, ...] = ("###",)

    def prefix(self, bos: str, system: str | None) -> str:
        return f"{bos}{system}\n\n###"

    def user(self, text: str) -> str:
        return f" Human: {text}\n###"

    def assistant_header(self) -> str:
        return " Assistant:"

    def assistant_body(self, text: str, eos: str) -> str:
        return f" {text}\n###"

    def jinja(self) -> str:
        return (
            _CONTENT_MACRO + "{{ bos_token }}"
            "{%- if messages[0]['role'] == 'system' -%}{%- set system = content(messages[0]) -%}"
            "{%- set loop_messages = messages[1:] -%}"
            "{%- else -%}{%- set system = " + repr(self.default_system) + " -%}"
            "{%- set loop_messages = messages -%}{%- endif -%}"
            "{{ system + '\\n\\n###' }}"
            "{%- for m in loop_messages -%}"
            "{%- if m['role'] == 'user' -%}{{ ' Human: ' + content(m) + '\\n###' }}"
            "{%- else -%}{{ ' Assistant:' }}"
            "{% generation %}{{ ' ' + content(m) + '\\n###' }}{% endgeneration %}"
            "{%- endif -%}{%- endfor -%}"
            "{%- if add_generation_prompt -%}{{ ' Assistant:' }}{%- endif -%}"
        )


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

    def render(self, turns: list[Turn], *, system: str | None = None, **kwargs) -> Rendered:  # type: ignore[override]
        system = self.default_system if system is None else system
        if system and self.system_role is None:
            first = turns[0]
            turns = [Turn(first.role, f"{system}\n\n{first.text}"), *turns[1:]]
            system = ""
        return super().render(turns, system=system, **kwargs)

    def prefix(self, bos: str, system: str | None) -> str:
        if system and self.system_role is not None:
            return f"{bos}{self.start}{self.system_role}\n{system}{self.end}\n"
        return bos

    def user(self, text: str) -> str:
        return f"{self.start}{self.user_role}\n{text}{self.end}\n"

    def assistant_header(self) -> str:
        return f"{self.start}{self.assistant_role}\n"

    def assistant_body(self, text: str, eos: str) -> str:
        return f"{text}{self.end}\n"

    def jinja(self) -> str:
        user, assistant, close = (repr(f"{self.start}{self.user_role}\n"), repr(f"{self.start}{self.assistant_role}\n"),
                                  repr(f"{self.end}\n"))
        if self.system_role is None:
            default = f"{self.default_system}\n\n" if self.default_system else ""
            setup = ("{%- if messages[0]['role'] == 'system' -%}"
                     "{%- set system = content(messages[0]) + '\\n\\n' -%}{%- set loop_messages = messages[1:] -%}"
                     "{%- else -%}{%- set system = " + repr(default) + " -%}"
                     "{%- set loop_messages = messages -%}{%- endif -%}")
            first_user = "(system if loop.first else '')"
        else:
            setup = ("{%- if messages[0]['role'] == 'system' -%}{%- set system = content(messages[0]) -%}"
                     "{%- set loop_messages = messages[1:] -%}"
                     "{%- else -%}{%- set system = " + repr(self.default_system or "") + " -%}"
                     "{%- set loop_messages = messages -%}{%- endif -%}"
                     "{%- if system -%}{{ " + repr(f"{self.start}{self.system_role}\n") + " + system + " + close
                     + " }}{%- endif -%}")
            first_user = "''"
        return (
            _CONTENT_MACRO + "{{ bos_token }}" + setup
            + "{%- for m in loop_messages -%}"
            "{%- if m['role'] == 'user' -%}{{ " + user + " + " + first_user + " + content(m) + " + close + " }}"
            "{%- else -%}{{ " + assistant + " }}"
            "{% generation %}{{ content(m) + " + close + " }}{% endgeneration %}"
            "{%- endif -%}{%- endfor -%}"
            "{%- if add_generation_prompt -%}{{ " + assistant + " }}{%- endif -%}"
        )


QWEN_SYSTEM = "You are a helpful assistant."

TEMPLATES: Registry[Template] = Registry("conversation template")
for _template in (Plain("plain"), VicunaV1("vicuna_v1"), MistralInstruct("mistral_instruct"),
                  LlavaMedLegacy("llava_med_legacy"),
                  TurnMarkers("chatml", default_system=QWEN_SYSTEM, stop_strings=("<|im_end|>",),
                              start="<|im_start|>", end="<|im_end|>"),
                  TurnMarkers("gemma", default_system="", stop_strings=("<end_of_turn>",),
                              start="<start_of_turn>", end="<end_of_turn>", assistant_role="model",
                              system_role=None)):
    TEMPLATES.register(_template.name)(_template)


def get_template(name: str) -> Template:
    return TEMPLATES.get(name)
