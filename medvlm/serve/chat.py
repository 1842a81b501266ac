"""``medvlm chat``: a multi-turn conversation with a model in the terminal, answers streamed.

The model answers through the same :class:`~medvlm.eval.generation.Generator` as ``medvlm predict``
and ``medvlm serve``, so a first question here gets the answer those give. Images and DICOM files are
read by the data layer (DICOM windowed and PHI-free: only modality and size are shown). Commands:

    /image PATH [WINDOW]   ask about an image or DICOM file (WINDOW: a CT preset, minmax or auto);
                           a new image starts a new conversation
    /window WINDOW         re-render the current DICOM file with another window
    /reset                 forget the conversation (the image stays)
    /save FILE [--overwrite]
                           write the conversation as LLaVA-style JSON (an existing file only
                           when an earlier /save wrote it, or with --overwrite)
    /help, /quit           (end of input quits too)
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from PIL import Image

from medvlm.data.dicom import CT_PRESETS, dicom_info
from medvlm.data.images import is_dicom_path, load_image
from medvlm.data.records import IMAGE_PLACEHOLDER, Turn
from medvlm.errors import MedvlmError
from medvlm.eval.generation import GenerationItem, Generator, Sampling
from medvlm.io import check_new_output, record_written, write_json
from medvlm.serve.protocol import conversation_sample

HELP = __doc__.split("\n\n", 2)[2].rstrip()  # type: ignore[union-attr]
WINDOWS = ("auto", "minmax", *CT_PRESETS)


@dataclass
class ChatSession:
    """The conversation so far: turns (the image's placeholder in the turn it was given) and the image."""

    generator: Generator
    max_new_tokens: int = 512
    sampling: Sampling = field(default_factory=Sampling)
    turns: list[Turn] = field(default_factory=list)
    image_path: Path | None = None
    window: str | None = None
    image: Image.Image | None = None
    _image_pending: bool = False

    def set_image(self, path: str | Path, window: str | None = None) -> str:
        """Load an image or DICOM file for the next question; a description without anything identifying.

        A conversation is about one image (as LLaVA's data are): a new image starts a new one.
        """
        description = self._load(Path(path).expanduser(), window)
        if any(IMAGE_PLACEHOLDER in turn.text for turn in self.turns):
            self.turns = []
            description += "; new conversation"
        self._image_pending = True
        return description

    def set_window(self, window: str) -> str:
        """Re-render the current DICOM file; the conversation goes on about the re-rendered image."""
        if self.image_path is None or not is_dicom_path(self.image_path):
            raise MedvlmError("/window applies to a DICOM image; load one with /image FILE.dcm")
        return self._load(self.image_path, window)

    def _load(self, path: Path, window: str | None) -> str:
        if window is not None and window not in WINDOWS:
            raise MedvlmError(f"unknown window '{window}'; choose one of {', '.join(WINDOWS)}")
        dicom = path.is_file() and is_dicom_path(path)
        self.image = load_image(path, dicom={"window": window} if dicom and window else None)
        self.image_path, self.window = path, window if dicom else None
        if dicom:
            info = dicom_info(path)
            return (f"DICOM {info.modality or 'unknown modality'}, {self.image.width}x{self.image.height}, "
                    f"window {window or 'auto'}")
        return f"image {self.image.width}x{self.image.height}"

    def reset(self) -> None:
        self.turns = []
        self._image_pending = self.image is not None

    def ask(self, question: str, on_text: Callable[[str], None]) -> str:
        """Answer ``question`` in context, calling ``on_text`` with each new piece of the answer."""
        text = f"{IMAGE_PLACEHOLDER}\n{question}" if self._image_pending else question
        turns = [*self.turns, Turn("user", text)]
        n_images = sum(turn.text.count(IMAGE_PLACEHOLDER) for turn in turns)
        images = [self.image] * n_images if self.image is not None else []
        ids = self.generator.prompt_ids(conversation_sample(turns, n_images), images=images)
        pixels = self.generator.image_pixels(images)
        item = GenerationItem(ids, pixels, self.max_new_tokens, self.generator.stops)
        answer = self.generator.generate([item], self.sampling, [lambda delta, done: on_text(delta)])[0]
        self.turns = [*turns, Turn("assistant", answer.text)]
        self._image_pending = False
        return answer.text

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """The conversation in LLaVA's format (``from``: human/gpt), with the image's file name; an
        existing file is replaced only when medvlm wrote it (an earlier save) or with ``overwrite``."""
        record = {"id": "medvlm-chat", "conversations": [
            {"from": "human" if turn.role == "user" else "gpt", "value": turn.text} for turn in self.turns]}
        if self.image_path is not None and any(IMAGE_PLACEHOLDER in turn.text for turn in self.turns):
            record["image"] = self.image_path.name
        path = Path(path).expanduser()
        check_new_output(path, overwrite=overwrite)
        write_json(path, [record])
        record_written(path)
        return path


def run_chat(model_dir: str, *, image: str | None = None, window: str | None = None, template: str | None = None,
             system_prompt: str | None = None, max_new_tokens: int = 512, temperature: float = 0.0,
             top_p: float = 1.0, image_aspect_ratio: str = "pad", dtype: str | None = None,
             read: Callable[[str], str] = input, out: TextIO = sys.stdout) -> int:
    """The interactive loop; ``read``/``out`` are the terminal (replaceable in tests). ``template`` and
    ``system_prompt`` default to those the model was trained with, as in ``medvlm predict``."""
    from medvlm.model.export import load_for_inference, prompt_settings

    try:  # line editing and history where the platform has readline
        import readline  # noqa: F401
    except ImportError:
        pass
    template, system_prompt = prompt_settings(model_dir, template, system_prompt)
    model, processor = load_for_inference(model_dir, dtype=dtype)
    session = ChatSession(Generator(model, processor, template, system_prompt, image_aspect_ratio),  # type: ignore[arg-type]
                          max_new_tokens=max_new_tokens, sampling=Sampling(temperature, top_p))
    print(f"medvlm chat with {model_dir} — /help for commands, /quit or Ctrl-D to leave", file=out)
    if image:
        print(f"[{session.set_image(image, window)}]", file=out)
    while True:
        try:
            line = read("you> ").strip()
        except EOFError:
            print(file=out)
            return 0
        if not line:
            continue
        if line.startswith("/"):
            try:
                if not _command(session, line, out):
                    return 0
            except (MedvlmError, ValueError) as exc:
                print(f"error: {exc}", file=out)
            continue
        print("model> ", end="", file=out, flush=True)
        session.ask(line, lambda delta: print(delta, end="", file=out, flush=True))
        print(file=out, flush=True)


def _command(session: ChatSession, line: str, out: TextIO) -> bool:
    """Run one slash command; False means quit."""
    name, *args = shlex.split(line)
    if name in ("/quit", "/exit"):
        return False
    if name == "/help":
        print(HELP, file=out)
    elif name == "/image" and 1 <= len(args) <= 2:
        print(f"[{session.set_image(args[0], args[1] if len(args) == 2 else None)}]", file=out)
    elif name == "/window" and len(args) == 1:
        print(f"[{session.set_window(args[0])}]", file=out)
    elif name == "/reset":
        session.reset()
        print("[conversation cleared]", file=out)
    elif name == "/save" and (len(args) == 1 or (len(args) == 2 and args[1] == "--overwrite")):
        print(f"[saved to {session.save(args[0], overwrite=len(args) == 2)}]", file=out)
    else:
        print(f"unknown command or arguments: {line}\n{HELP}", file=out)
    return True
