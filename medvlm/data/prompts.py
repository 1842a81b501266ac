"""Question prompt styles for VQA items.

The same question is asked differently by different evaluation conventions, and scores move with
the wording; the style is recorded in every answer file and report.

* ``plain``: the question as published.
* ``short_answer``: LLaVA-1.5's suffix, "Answer the question using a single word or phrase."
* ``llava_med_closed``: LLaVA-Med's answer files add " Please choose from the following two options:
  [yes, no]" to closed (yes/no) questions only.
"""

from __future__ import annotations

from dataclasses import replace

from medvlm.data.records import Sample, Turn

SHORT_ANSWER = "Answer the question using a single word or phrase."
LLAVA_MED_CLOSED = " Please choose from the following two options: [yes, no]"


def styled_question(question: str, style: str, answer_type: str | None) -> str:
    if style == "plain":
        return question
    if style == "short_answer":
        return f"{question}\n{SHORT_ANSWER}"
    if style == "llava_med_closed":
        return question + LLAVA_MED_CLOSED if answer_type == "CLOSED" else question
    raise ValueError(f"unknown prompt style '{style}'")


def apply_prompt_style(sample: Sample, style: str) -> Sample:
    """The sample with its first question restyled (other turns untouched)."""
    if style == "plain" or not sample.turns:
        return sample
    first = sample.turns[0]
    turns = [Turn(first.role, styled_question(first.text, style, sample.meta.answer_type)), *sample.turns[1:]]
    return replace(sample, turns=turns)
