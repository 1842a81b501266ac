"""The OpenAI chat-completions request, validated, and turned into a medvlm conversation.

Requests are checked strictly (a string where a number belongs is a 400, not a guess); fields of the
OpenAI API that do not change a greedy or sampled answer (``user``, ``seed``, ``logprobs`` ...) are
ignored, as other OpenAI-compatible servers do. An ``image_url`` part may carry a medvlm extension,
``"dicom": {"window": "lung"}`` (or a preset name), for DICOM images.

Image placement follows the conversation templates: each image part becomes ``<image>`` at the start
of its turn; a conversation with a single image has it at the front of the first user turn, where
LLaVA's training data put it — so a question sent with one image is encoded exactly as
``medvlm predict`` encodes the same question from a data file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medvlm.data.records import IMAGE_PLACEHOLDER, Sample, SampleMeta, Turn
from medvlm.serve.media import RequestError


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class ImageURL(_Strict):
    url: str
    detail: str | None = None
    dicom: dict[str, Any] | str | None = None


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ImagePart(_Strict):
    type: Literal["image_url"]
    image_url: ImageURL


Part = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[Part] | None = None


class StreamOptions(_Strict):
    include_usage: bool = False


class ChatRequest(_Strict):
    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1, le=1)

    @property
    def token_budget(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    @property
    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(s for s in self.stop if s)


def parse_request(payload: Any) -> ChatRequest:
    """A validated request, or a 400 naming the first bad field."""
    try:
        return ChatRequest.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"] if not str(part).startswith(("function-", "tagged-")))
        raise RequestError(f"{where or 'body'}: {first['msg']}", param=where or None) from None


@dataclass
class ImageRef:
    url: str
    dicom: dict[str, Any] | str | None
    param: str


@dataclass
class Conversation:
    turns: list[Turn]
    images: list[ImageRef]
    system: str | None  # None: the server's default system prompt

    def sample(self) -> Sample:
        """The conversation as a medvlm sample (image names are placeholders; pixels travel apart)."""
        return conversation_sample(self.turns, len(self.images))


def conversation_sample(turns: list[Turn], n_images: int) -> Sample:
    """A sample for turns whose image placeholders sit where the images were given.

    With one image the placeholder is removed and the encoder puts it at the front of the first
    user turn (LLaVA's layout); with several, each stays at the start of its own turn.
    """
    if n_images == 1:
        turns = [Turn(turn.role, turn.text.replace(IMAGE_PLACEHOLDER, "").strip()) if IMAGE_PLACEHOLDER in turn.text
                 else turn for turn in turns]
    return Sample(id="request", turns=turns, meta=SampleMeta(dataset="request", split="request"),
                  images=[f"image-{i + 1}" for i in range(n_images)])


def conversation_of(request: ChatRequest) -> Conversation:
    """Turns, images and system prompt of a request; 400 for a conversation the templates cannot take."""
    system_parts: list[str] = []
    turns: list[Turn] = []
    images: list[ImageRef] = []
    for index, message in enumerate(request.messages):
        param = f"messages.{index}"
        if message.role in ("system", "developer"):
            if turns:
                raise RequestError("system messages must come before the conversation", param=param)
            system_parts.append(_text_only(message, param))
            continue
        if message.role == "assistant":
            turns.append(Turn("assistant", _text_only(message, param)))
            continue
        pieces: list[str] = []
        for number, part in enumerate([message.content] if isinstance(message.content, str) else
                                      message.content or []):
            if isinstance(part, (str, TextPart)):
                text = part if isinstance(part, str) else part.text
                if IMAGE_PLACEHOLDER in text:
                    raise RequestError(f"text may not contain '{IMAGE_PLACEHOLDER}'; send images as image_url parts",
                                       param=param)
                pieces.append(text)
            else:
                images.append(ImageRef(part.image_url.url, part.image_url.dicom, f"{param}.content.{number}"))
                pieces.append(IMAGE_PLACEHOLDER + "\n")
        turns.append(Turn("user", "".join(pieces)))
    if not turns or turns[-1].role != "user":
        raise RequestError("the last message must be from the user", param="messages")
    for index, turn in enumerate(turns):
        if turn.role != ("user" if index % 2 == 0 else "assistant"):
            raise RequestError("user and assistant messages must alternate, starting with the user",
                               param="messages")
    return Conversation(turns, images, "\n".join(system_parts) if system_parts else None)


def _text_only(message: Message, param: str) -> str:
    if message.content is None or isinstance(message.content, str):
        return message.content or ""
    if any(isinstance(part, ImagePart) for part in message.content):
        raise RequestError(f"{message.role} messages cannot carry images", param=param)
    return "".join(part.text for part in message.content if isinstance(part, TextPart))
