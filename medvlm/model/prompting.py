"""The prompt a model was trained with, recorded beside its weights so that it travels with the model.

A model answers best when prompted as it was trained: same conversation template, same system
prompt (a model trained with ``system_prompt: ""`` has never seen the template's long default one).
Every model directory medvlm writes (a stage's ``model/``, ``medvlm export``, ``convert-llava``) holds
``prompt.json``::

    {"template": "vicuna_v1", "system_prompt": ""}

and a chat template rendered from the same record, so plain transformers (``apply_chat_template``)
and medvlm (``predict`` and the serving commands, unless told otherwise) build the same prompt.
``system_prompt`` null means the template's default.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from medvlm.errors import ModelError
from medvlm.io import write_json

PROMPT_FILE = "prompt.json"


@dataclass(frozen=True)
class TrainedPrompt:
    template: str
    system_prompt: str | None = None  # None: the template's default system prompt

    @classmethod
    def of(cls, data) -> TrainedPrompt:
        """The prompt a recipe's ``data`` section trains with."""
        return cls(data.template, data.system_prompt)

    def chat_template(self, processor, family=None) -> str:
        """The Jinja chat template that renders this prompt for ``processor``'s tokenizer (see
        ``chunk_gap``), images written as ``family`` (a :class:`~medvlm.model.families.ModelFamily`;
        None: LLaVA's ``<image>``) writes them."""
        from medvlm.data.templates import chunk_gap, get_template

        jinja = get_template(self.template).chat_template(self.system_prompt, chunk_gap(processor.tokenizer))
        return family.place_images(jinja, processor) if family is not None else jinja

    def apply(self, processor, family=None) -> None:
        """Give ``processor`` the chat template of this prompt (for a model of ``family``)."""
        processor.chat_template = self.chat_template(processor, family)

    def write(self, directory: str | Path) -> None:
        write_json(Path(directory) / PROMPT_FILE, {"template": self.template, "system_prompt": self.system_prompt})


def read_trained_prompt(directory: str | Path) -> TrainedPrompt | None:
    """The record in a model directory; None when the directory has none (not written by medvlm)."""
    path = Path(directory) / PROMPT_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: cannot read the model's prompt record: {exc}") from None
    if not isinstance(record, dict) or not isinstance(record.get("template"), str):
        raise ModelError(f"{path}: key 'template' is missing or not a string")
    system = record.get("system_prompt")
    if system is not None and not isinstance(system, str):
        raise ModelError(f"{path}: key 'system_prompt' must be a string or null")
    from medvlm.data.templates import TEMPLATES

    if record["template"] not in TEMPLATES:
        raise ModelError(f"{path}: template '{record['template']}' is not a known conversation template")
    return TrainedPrompt(record["template"], system)
