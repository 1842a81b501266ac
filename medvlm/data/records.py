"""The one record type every dataset is read into.

A :class:`Sample` is a conversation (user and assistant turns) about zero or more images, plus the
metadata evaluation breaks results down by. Readers never pass raw dicts around: whatever the
original format, the rest of medvlm sees Samples.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

IMAGE_PLACEHOLDER = "<image>"

Role = Literal["user", "assistant"]
AnswerType = Literal["OPEN", "CLOSED"]


@dataclass(frozen=True)
class Turn:
    role: Role
    text: str


@dataclass
class SampleMeta:
    """What a sample is about. Breakdown fields are named as evaluation reports them."""

    dataset: str
    split: str
    answer_type: AnswerType | None = None
    modality: str | None = None
    organ: str | None = None  # organ or location (SLAKE 'location', VQA-RAD 'image_organ')
    question_type: str | None = None  # question or content type
    language: str | None = "en"
    source_id: str | None = None  # the id in the original file (VQA-RAD qid, SLAKE qid, ...)
    extra: dict[str, Any] = field(default_factory=dict)


BREAKDOWN_FIELDS = ("answer_type", "modality", "organ", "question_type", "language")


@dataclass
class Sample:
    id: str
    turns: list[Turn]
    meta: SampleMeta
    images: list[str] = field(default_factory=list)  # paths relative to image_root (or absolute)
    image_root: str | None = None

    @property
    def has_image(self) -> bool:
        return bool(self.images)

    @property
    def question(self) -> str:
        """The first user turn without the image placeholder (VQA items have exactly one)."""
        return self.turns[0].text.replace(IMAGE_PLACEHOLDER, "").strip()

    @property
    def answer(self) -> str | None:
        """The first assistant turn: the reference answer for VQA items."""
        return next((t.text for t in self.turns if t.role == "assistant"), None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def vqa_sample(*, id: str, question: str, answer: str | None, meta: SampleMeta,
               image: str | None = None, image_root: str | None = None) -> Sample:
    """A one-turn VQA item, with the placeholder where LLaVA's trainers put it (front)."""
    turns = [Turn("user", f"{IMAGE_PLACEHOLDER}\n{question}" if image else question)]
    if answer is not None:
        turns.append(Turn("assistant", answer))
    return Sample(id=id, turns=turns, meta=meta, images=[image] if image else [],
                  image_root=image_root)
