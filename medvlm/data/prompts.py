"""Question prompt styles for VQA items, registered by name (``data.prompt_style``, ``--prompt-style``).

The same question is asked differently by different evaluation conventions, and scores move with
the wording; the style is recorded in every answer file and report. A style is a function
``(question, answer_type) -> question``; a new one is one more registered function.

* ``plain``: the question as published.
* ``short_answer``: LLaVA-1.5's suffix, "Answer the question using a single word or phrase."
* ``llava_med_closed``: LLaVA-Med's answer files add " Please choose from the following two options:
  [yes, no]" to closed (yes/no) questions only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from medvlm.data.records import Sample, Turn
from medvlm.registry import PROMPT_STYLES

SHORT_ANSWER = "Answer the question using a single word or phrase."
LLAVA_MED_CLOSED = " Please choose from the following two options: [yes, no]"

PromptStyle = Callable[[str, "str | None"], str]


@PROMPT_STYLES.register("plain")
def plain(question: str, answer_type: str | None) -> str:
    return question


@PROMPT_STYLES.register("short_answer")
def short_answer(question: str, answer_type: str | None) -> str:
    return f"{question}\n{SHORT_ANSWER}"


@PROMPT_STYLES.register("llava_med_closed")
def llava_med_closed(question: str, answer_type: str | None) -> str:
    return question + LLAVA_MED_CLOSED if answer_type == "CLOSED" else question


def styled_question(question: str, style: str, answer_type: str | None) -> str:
    return PROMPT_STYLES.get(style)(question, answer_type)


def apply_prompt_style(sample: Sample, style: str) -> Sample:
    """The sample with its first question restyled (other turns untouched)."""
    if style == "plain" or not sample.turns:
        return sample
    first = sample.turns[0]
    turns = [Turn(first.role, styled_question(first.text, style, sample.meta.answer_type)), *sample.turns[1:]]
    return replace(sample, turns=turns)
