"""Procedural images and text: the embedded default data, deterministic from a seed.

Two domains, so a demo can show adaptation and forgetting without downloading anything:

* **general** — coloured shapes on a light background. Attributes: colour, shape, count, position,
  size.
  This is the "general" skill a base LLaVA has before it meets medicine.
* **medical** — grey-scale scan-like images. Modality (CT, MRI, X-ray) is visible in texture and
  contrast, the organ (brain, chest, abdomen) in the outline, and a lesion may be present with a
  side and a size. Sides follow the radiological convention: the patient's left is on the image's
  right, as in real radiology VQA.

From each image come a caption (PMC-style for medical images), a multi-turn instruction
conversation, and short-answer VQA items carrying answer_type, modality, organ and question type.
Every question can be answered from the pixels alone.

:func:`materialise` writes everything to a directory in LLaVA conversation JSON (the downstream
format, with meta keys), so the synthetic data is read through the same reader as real data.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from medvlm.io import write_json

GENERATOR_VERSION = 1

COLORS = {"red": (220, 45, 45), "green": (40, 165, 60), "blue": (45, 75, 220), "yellow": (235, 200, 40)}
SHAPES = ("circle", "square", "triangle")
COUNT_WORDS = {1: "one", 2: "two", 3: "three"}
POSITIONS = ("left", "right", "top", "bottom")

MODALITIES = ("CT", "MRI", "X-Ray")
MODALITY_ANSWER = {"CT": "ct", "MRI": "mri", "X-Ray": "x-ray"}
MODALITY_LONG = {"CT": "computed tomography (CT)", "MRI": "magnetic resonance imaging (MRI)",
                 "X-Ray": "a plain radiograph (X-ray)"}
MODALITY_SHORT = {"CT": "CT", "MRI": "MRI", "X-Ray": "X-ray"}
ORGANS = ("brain", "chest", "abdomen")
SIDES = ("left", "right")
SIZES = ("small", "large")
ORGAN_REGION = {"brain": "hemisphere", "chest": "lung", "abdomen": "side of the abdomen"}


# --------------------------------------------------------------------------------------------------
# Scenes
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShapeScene:
    color: str
    shape: str
    count: int
    position: str
    size: str = "small"


@dataclass(frozen=True)
class Scan:
    modality: str
    organ: str
    lesion: bool
    side: str | None  # patient's side
    size: str | None


def sample_shape_scene(rng: np.random.Generator) -> ShapeScene:
    return ShapeScene(color=str(rng.choice(list(COLORS))), shape=str(rng.choice(SHAPES)),
                      count=int(rng.integers(1, 4)), position=str(rng.choice(POSITIONS)),
                      size=str(rng.choice(SIZES)))


def sample_scan(rng: np.random.Generator) -> Scan:
    lesion = bool(rng.random() < 0.5)
    return Scan(modality=str(rng.choice(MODALITIES)), organ=str(rng.choice(ORGANS)), lesion=lesion,
                side=str(rng.choice(SIDES)) if lesion else None,
                size=str(rng.choice(SIZES)) if lesion else None)


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------


def _shape_mask(kind: str, cy: float, cx: float, r: float, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    if kind == "circle":
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
    if kind == "square":
        side = r * 0.85
        return (np.abs(yy - cy) <= side) & (np.abs(xx - cx) <= side)
    # upward triangle: apex at top, base at bottom
    top, bottom = cy - r, cy + r
    half_width = (yy - top) / (2 * r) * r * 1.1
    return (yy >= top) & (yy <= bottom) & (np.abs(xx - cx) <= half_width)


def render_shapes(scene: ShapeScene, size: int, rng: np.random.Generator) -> Image.Image:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    image = np.full((size, size, 3), 245.0, dtype=np.float32) + rng.normal(0, 4, (size, size, 3))
    radius = size * (0.085 if scene.size == "small" else 0.14)
    slots = [0.2, 0.5, 0.8]
    chosen = sorted(rng.choice(3, size=scene.count, replace=False)) if scene.count < 3 else [0, 1, 2]
    near, far = size * 0.26, size * 0.74
    jitter = lambda: float(rng.uniform(-0.03, 0.03) * size)  # noqa: E731 - tiny local helper
    for slot in chosen:
        along = slots[slot] * size + jitter()
        if scene.position in ("left", "right"):
            cx = (near if scene.position == "left" else far) + jitter()
            cy = along
        else:
            cy = (near if scene.position == "top" else far) + jitter()
            cx = along
        mask = _shape_mask(scene.shape, cy, cx, radius, yy, xx)
        image[mask] = np.array(COLORS[scene.color], dtype=np.float32) + rng.normal(0, 6, 3)
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), "RGB")


# Grey levels per modality: background, soft tissue, rim (bone), dark structure (lung), inner
# structure (ventricles, heart), liver, lesion, and noise. Lesions contrast with every structure
# they can overlap, so each answer stays visible.
_MODALITY_LOOK = {
    "CT": dict(bg=0.0, tissue=105.0, rim=235.0, dark=20.0, inner=70.0, liver=135.0, lesion=215.0,
               noise=11.0),
    "MRI": dict(bg=0.0, tissue=165.0, rim=45.0, dark=15.0, inner=235.0, liver=105.0, lesion=250.0,
                noise=2.5),
    "X-Ray": dict(bg=55.0, tissue=120.0, rim=215.0, dark=70.0, inner=140.0, liver=145.0, lesion=230.0,
                  noise=4.0),
}


def _ellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def render_scan(scan: Scan, size: int, rng: np.random.Generator) -> Image.Image:
    look = {k: v * float(rng.uniform(0.93, 1.07)) for k, v in _MODALITY_LOOK[scan.modality].items()}
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    s = float(size)
    cy, cx = s / 2 + rng.uniform(-0.03, 0.03) * s, s / 2 + rng.uniform(-0.03, 0.03) * s
    scale = float(rng.uniform(0.92, 1.05))
    image = np.full((size, size), look["bg"], dtype=np.float32)
    if scan.modality == "X-Ray":  # projection images have no black air background
        image += (yy / s) * 35.0

    if scan.organ == "brain":
        ry, rx = 0.42 * s * scale, 0.35 * s * scale
        outer = _ellipse(yy, xx, cy, cx, ry, rx)
        inner = _ellipse(yy, xx, cy, cx, ry - 0.07 * s, rx - 0.07 * s)
        image[outer] = look["rim"]
        image[inner] = look["tissue"]
        for dx in (-0.07, 0.07):  # ventricles
            image[_ellipse(yy, xx, cy, cx + dx * s, 0.11 * s, 0.035 * s)] = look["inner"]
        lesion_cx_offset, lesion_cy = 0.17 * s, cy + rng.uniform(-0.08, 0.08) * s
    elif scan.organ == "chest":
        ry, rx = 0.36 * s * scale, 0.46 * s * scale
        image[_ellipse(yy, xx, cy, cx, ry, rx)] = look["tissue"]
        for dx in (-0.21, 0.21):  # lungs
            image[_ellipse(yy, xx, cy - 0.02 * s, cx + dx * s, 0.25 * s * scale, 0.14 * s * scale)] = look["dark"]
        image[_ellipse(yy, xx, cy + 0.05 * s, cx + 0.05 * s, 0.1 * s, 0.08 * s)] = look["inner"]  # heart
        image[(np.abs(xx - cx) < 0.03 * s) & _ellipse(yy, xx, cy, cx, ry, rx)] = look["rim"]  # spine
        lesion_cx_offset, lesion_cy = 0.21 * s, cy + rng.uniform(-0.1, 0.08) * s
    else:  # abdomen
        ry, rx = 0.38 * s * scale, 0.45 * s * scale
        image[_ellipse(yy, xx, cy, cx, ry, rx)] = look["tissue"]
        image[_ellipse(yy, xx, cy - 0.05 * s, cx - 0.17 * s, 0.17 * s, 0.2 * s)] = look["liver"]
        image[_ellipse(yy, xx, cy + 0.25 * s, cx, 0.06 * s, 0.06 * s)] = look["rim"]  # vertebra
        for dx in (-0.2, 0.2):  # kidneys
            image[_ellipse(yy, xx, cy + 0.13 * s, cx + dx * s, 0.07 * s, 0.045 * s)] = look["inner"] * 0.8
        lesion_cx_offset, lesion_cy = 0.2 * s, cy + rng.uniform(-0.12, 0.05) * s

    if scan.lesion:
        # radiological convention: the patient's left is on the image's right
        lx = cx + (lesion_cx_offset if scan.side == "left" else -lesion_cx_offset)
        lx += rng.uniform(-0.03, 0.03) * s
        radius = (0.09 if scan.size == "small" else 0.17) * s
        image[_ellipse(yy, xx, lesion_cy, lx, radius, radius)] = look["lesion"]

    if scan.modality == "MRI":  # smooth coil-sensitivity bias field
        image *= 1.0 + 0.12 * ((xx - cx) / s + rng.uniform(-0.5, 0.5) * (yy - cy) / s)
    image += rng.normal(0.0, look["noise"], image.shape)
    picture = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), "L")
    if scan.modality == "X-Ray":
        picture = picture.filter(ImageFilter.GaussianBlur(radius=size / 48))
    return picture.convert("RGB")


# --------------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QA:
    question: str
    answer: str
    answer_type: str  # OPEN | CLOSED
    question_type: str


def _plural(scene: ShapeScene) -> str:
    return f"{scene.shape}s" if scene.count > 1 else scene.shape


def _pick(rng: np.random.Generator, options: list[str] | tuple[str, ...]) -> str:
    return str(options[int(rng.integers(len(options)))])


def shapes_caption(scene: ShapeScene, rng: np.random.Generator) -> str:
    count = COUNT_WORDS[scene.count]
    things = f"{scene.size} {scene.color} {_plural(scene)}"
    return _pick(rng, [
        f"{count.capitalize()} {things} on the {scene.position}.",
        f"An image with {count} {things} at the {scene.position}.",
        f"{count.capitalize()} {things} placed on the {scene.position} side.",
    ])


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def _other(rng: np.random.Generator, truth: Any, options: tuple | list) -> Any:
    """The true value half of the time, otherwise a different one (balanced yes/no)."""
    if rng.random() < 0.5:
        return truth
    others = [option for option in options if option != truth]
    return others[int(rng.integers(len(others)))]


def shapes_vqa(scene: ShapeScene, rng: np.random.Generator) -> list[QA]:
    be = "are" if scene.count > 1 else "is"
    them = "the shapes" if scene.count > 1 else "the shape"
    asked_color = str(_other(rng, scene.color, list(COLORS)))
    asked_shape = str(_other(rng, scene.shape, list(SHAPES)))
    asked_count = int(_other(rng, scene.count, [1, 2, 3]))
    asked_pos = str(_other(rng, scene.position, list(POSITIONS)))
    asked_size = str(_other(rng, scene.size, list(SIZES)))
    open_items = [
        QA(f"What color {be} {them}?", scene.color, "OPEN", "COLOR"),
        QA("What shape is shown?", scene.shape, "OPEN", "SHAPE"),
        QA("How many shapes are there?", COUNT_WORDS[scene.count], "OPEN", "COUNT"),
        QA(f"Where {be} {them}?", scene.position, "OPEN", "POSITION"),
        QA(f"How large {be} {them}?", scene.size, "OPEN", "SIZE"),
    ]
    closed_items = [
        QA(f"Is the color {asked_color}?", _yes_no(asked_color == scene.color), "CLOSED", "COLOR"),
        QA(f"Is there a {asked_shape}?", _yes_no(asked_shape == scene.shape), "CLOSED", "SHAPE"),
        QA(f"Are there {COUNT_WORDS[asked_count]} shapes?", _yes_no(asked_count == scene.count),
           "CLOSED", "COUNT"),
        QA(f"Are the shapes on the {asked_pos}?", _yes_no(asked_pos == scene.position), "CLOSED",
           "POSITION"),
        QA(f"Are the shapes {asked_size}?", _yes_no(asked_size == scene.size), "CLOSED", "SIZE"),
    ]
    # one question per attribute, open or closed at random
    return [open_item if rng.random() < 0.5 else closed_item
            for open_item, closed_item in zip(open_items, closed_items, strict=True)]


def shapes_conversation(scene: ShapeScene, rng: np.random.Generator) -> list[tuple[str, str]]:
    count = COUNT_WORDS[scene.count]
    be = "are" if scene.count > 1 else "is"
    turns = [
        (_pick(rng, ["Describe the image.", "What do you see?"]), shapes_caption(scene, rng)),
        ("How many shapes are there?", f"There {be} {count} {_plural(scene)}."),
        ("What color are they?", f"They are {scene.color}." if scene.count > 1 else f"It is {scene.color}."),
        ("Where are they?", f"On the {scene.position}."),
        ("How big are they?", f"They are {scene.size}." if scene.count > 1 else f"It is {scene.size}."),
    ]
    order = [0] + list(1 + rng.permutation(4))
    return [turns[i] for i in order[: int(rng.integers(2, 5))]]


def scan_caption(scan: Scan, rng: np.random.Generator) -> str:
    mod = MODALITY_SHORT[scan.modality]
    view = "Axial" if scan.modality in ("CT", "MRI") else _pick(rng, ["Frontal", "AP"])
    if scan.lesion:
        finding = _pick(rng, [
            f"showing a {scan.size} lesion in the {scan.side} {ORGAN_REGION[scan.organ]}",
            f"demonstrating a {scan.size} mass on the patient's {scan.side} side",
            f"with a {scan.size} focal lesion in the {scan.side} {ORGAN_REGION[scan.organ]} (arrow)",
        ])
    else:
        finding = _pick(rng, ["showing no focal lesion", "with no abnormality",
                              "demonstrating normal appearance"])
    caption = f"{view} {mod} of the {scan.organ} {finding}."
    return _pick(rng, [caption, f"Figure {int(rng.integers(1, 6))}: {caption}"])


def scan_vqa(scan: Scan, rng: np.random.Generator) -> list[QA]:
    asked_mod = str(_other(rng, scan.modality, list(MODALITIES)))
    asked_organ = str(_other(rng, scan.organ, list(ORGANS)))
    article = "an" if asked_mod in ("MRI", "X-Ray") else "a"
    items = [
        _pick_qa(rng, [
            QA(_pick(rng, ["What imaging modality is used?", "What modality is shown?",
                           "How was this image taken?"]), MODALITY_ANSWER[scan.modality], "OPEN",
               "MODALITY"),
            QA(f"Is this {article} {MODALITY_SHORT[asked_mod]} image?",
               _yes_no(asked_mod == scan.modality), "CLOSED", "MODALITY"),
        ]),
        _pick_qa(rng, [
            QA(_pick(rng, ["Which organ is shown?", "What part of the body is imaged?"]), scan.organ,
               "OPEN", "ORGAN"),
            QA(f"Is this an image of the {asked_organ}?", _yes_no(asked_organ == scan.organ), "CLOSED",
               "ORGAN"),
        ]),
        _pick_qa(rng, [
            QA("Is there a lesion?", _yes_no(scan.lesion), "CLOSED", "PRES"),
            QA("Is there an abnormality?", _yes_no(scan.lesion), "CLOSED", "PRES"),
            QA("Is this image normal?", _yes_no(not scan.lesion), "CLOSED", "PRES"),
        ]),
    ]
    if scan.lesion:
        asked_side = str(_other(rng, scan.side, list(SIDES)))
        asked_size = str(_other(rng, scan.size, list(SIZES)))
        items.append(_pick_qa(rng, [
            QA(_pick(rng, ["Which side is the lesion on?", "Where is the lesion?"]), str(scan.side),
               "OPEN", "POS"),
            QA(f"Is the lesion on the {asked_side} side?", _yes_no(asked_side == scan.side), "CLOSED",
               "POS"),
        ]))
        items.append(_pick_qa(rng, [
            QA("How large is the lesion?", str(scan.size), "OPEN", "SIZE"),
            QA(f"Is the lesion {asked_size}?", _yes_no(asked_size == scan.size), "CLOSED", "SIZE"),
        ]))
    return items


def _pick_qa(rng: np.random.Generator, options: list[QA]) -> QA:
    return options[int(rng.integers(len(options)))]


def scan_conversation(scan: Scan, rng: np.random.Generator) -> list[tuple[str, str]]:
    finding = (f"Yes, there is a {scan.size} lesion on the patient's {scan.side} side."
               if scan.lesion else "No, there is no visible lesion; the image appears normal.")
    turns = [
        (_pick(rng, ["What type of imaging is this?", "Which imaging technique was used?"]),
         f"This image was acquired with {MODALITY_LONG[scan.modality]}."),
        (_pick(rng, ["Which part of the body does it show?", "What anatomy is visible?"]),
         f"The image shows the {scan.organ}."),
        (_pick(rng, ["Are there any abnormal findings?", "Do you see a lesion?"]), finding),
    ]
    order = list(rng.permutation(3))
    return [turns[i] for i in order[: int(rng.integers(2, 4))]]


# --------------------------------------------------------------------------------------------------
# Materialisation
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticSpec:
    """Everything that determines the generated files; its hash names the data version."""

    seed: int = 0
    image_size: int = 32
    general_images: dict[str, int] = field(default_factory=lambda: {"train": 1500, "test": 200})
    medical_images: dict[str, int] = field(default_factory=lambda: {"train": 1200, "test": 150})
    version: int = GENERATOR_VERSION

    def digest(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


SUBSETS = ("general_caption", "general_vqa", "general_instruct",
           "medical_caption", "medical_vqa", "medical_instruct", "general_text")

SIDES_OF = {"circle": "no", "square": "four", "triangle": "three"}
OPPOSITE = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}


def general_text_pairs(rng: np.random.Generator) -> list[tuple[str, str]]:
    """Text-only general questions (no image) in the general domain's words, with their answers.

    They are what UIR needs: text-only instructions whose hidden states the base model answers in
    its general way (LLaVA-c uses the text-only ShareGPT part of LLaVA-665K). Answers are given so
    the file is ordinary LLaVA data; UIR never reads them.
    """
    scene = sample_shape_scene(rng)
    count = COUNT_WORDS[scene.count]
    things = f"{scene.size} {scene.color} {_plural(scene)}"
    other = str(_other(rng, scene.color, list(COLORS)))
    return [
        (f"Describe {count} {things} on the {scene.position}.", shapes_caption(scene, rng)),
        (f"How many sides does a {scene.shape} have?", SIDES_OF[scene.shape]),
        (f"What is the opposite of {scene.position}?", OPPOSITE[scene.position]),
        (f"Is a {scene.color} {scene.shape} {other}?", _yes_no(other == scene.color)),
        (f"Which is larger, a small {scene.shape} or a large {scene.shape}?", f"the large {scene.shape}"),
    ]


def general_text_records(split: str, count: int, spec: SyntheticSpec) -> list[dict[str, Any]]:
    """``count`` rounds of :func:`general_text_pairs` as text-only one-turn LLaVA records."""
    rng = np.random.default_rng([spec.seed, 2, {"train": 0, "test": 1}.get(split, 2)])
    records = []
    for index in range(count):
        for qa_index, (question, answer) in enumerate(general_text_pairs(rng)):
            records.append({"id": f"text-{split}-{index:05d}-q{qa_index}",
                            "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]})
    return records


def ensure_text_subsets(root: Path, spec: SyntheticSpec) -> None:
    """Write the text-only subset if missing: it needs no image, so a directory materialised before the
    subset existed gains it on first use (one round per general image of each split)."""
    for split, count in spec.general_images.items():
        file = root / f"general_text_{split}.json"
        if not file.is_file():
            write_json(file, general_text_records(split, count, spec), indent=None)


def _conversation(question: str, answer: str) -> list[dict[str, str]]:
    return [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}]


def _multi_turn(pairs: list[tuple[str, str]]) -> list[dict[str, str]]:
    turns: list[dict[str, str]] = []
    for i, (question, answer) in enumerate(pairs):
        turns.append({"from": "human", "value": f"<image>\n{question}" if i == 0 else question})
        turns.append({"from": "gpt", "value": answer})
    return turns


def _domain_records(domain: str, split: str, count: int, spec: SyntheticSpec, image_dir: Path,
                    ) -> dict[str, list[dict[str, Any]]]:
    # One generator per (domain, split) so changing a test count never changes the train data.
    seed_words = [spec.seed, 0 if domain == "general" else 1, {"train": 0, "test": 1}.get(split, 2)]
    rng = np.random.default_rng(seed_words)
    out: dict[str, list[dict[str, Any]]] = {f"{domain}_{kind}": [] for kind in ("caption", "vqa", "instruct")}
    sampler: Callable[[np.random.Generator], Any] = sample_shape_scene if domain == "general" else sample_scan
    for index in range(count):
        scene = sampler(rng)
        name = f"{domain}_{split}_{index:05d}.png"
        image_rel = f"{domain}/{split}/{name}"
        if domain == "general":
            picture, caption = render_shapes(scene, spec.image_size, rng), shapes_caption(scene, rng)
            items, chat = shapes_vqa(scene, rng), shapes_conversation(scene, rng)
            meta = {"modality": "photo", "organ": None}
            brief = "Describe the image briefly."
        else:
            picture, caption = render_scan(scene, spec.image_size, rng), scan_caption(scene, rng)
            items, chat = scan_vqa(scene, rng), scan_conversation(scene, rng)
            meta = {"modality": scene.modality, "organ": scene.organ}
            brief = _pick(rng, ["Describe the image concisely.", "Give a short description of the figure.",
                                "Summarize the visual content of the image."])
        picture.save(image_dir / image_rel)
        stem = f"{domain}-{split}-{index:05d}"
        out[f"{domain}_caption"].append({"id": f"{stem}-cap", "image": image_rel,
                                         "conversations": _conversation(brief, caption), **meta})
        out[f"{domain}_instruct"].append({"id": f"{stem}-conv", "image": image_rel,
                                          "conversations": _multi_turn(chat), **meta})
        for qa_index, qa in enumerate(items):
            out[f"{domain}_vqa"].append({
                "id": f"{stem}-q{qa_index}", "image": image_rel,
                "conversations": _conversation(qa.question, qa.answer),
                "answer_type": qa.answer_type, "question_type": qa.question_type, **meta})
    return out


def materialise(root: str | os.PathLike, spec: SyntheticSpec | None = None) -> Path:
    """Generate the synthetic data under ``root`` (once; later calls reuse it).

    Files: ``{subset}_{split}.json`` in LLaVA conversation format, images under ``images/``, and
    ``spec.json``. Generation happens in a temporary directory renamed into place, so concurrent or
    interrupted runs never see half a dataset.
    """
    spec = spec or SyntheticSpec()
    root = Path(root)
    spec_file = root / "spec.json"
    if spec_file.exists():
        existing = json.loads(spec_file.read_text())
        if existing.get("digest") != spec.digest():
            from medvlm.errors import DataError

            raise DataError("holds synthetic data generated with different settings "
                            f"(digest {existing.get('digest')} vs {spec.digest()}); "
                            "use another path or delete it", file=str(root))
        ensure_text_subsets(root, spec)
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        for domain, counts in (("general", spec.general_images), ("medical", spec.medical_images)):
            for split, count in counts.items():
                (staging / "images" / domain / split).mkdir(parents=True, exist_ok=True)
                for subset, records in _domain_records(domain, split, count, spec, staging / "images").items():
                    write_json(staging / f"{subset}_{split}.json", records, indent=None)
        ensure_text_subsets(staging, spec)
        write_json(staging / "spec.json", {**asdict(spec), "digest": spec.digest()})
        try:
            os.replace(staging, root)
        except OSError:  # another process finished first (or root exists but is empty)
            if not spec_file.exists():
                if root.exists() and not any(root.iterdir()):
                    root.rmdir()
                    os.replace(staging, root)
                    return root
                from medvlm.errors import OutputError

                raise OutputError(f"{root}: exists and holds other files; choose a new directory for the "
                                  "synthetic data") from None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return root


def corpus_texts(spec: SyntheticSpec | None = None, n: int = 400) -> list[str]:
    """Representative text for training the tiny tokenizer (no images rendered)."""
    spec = spec or SyntheticSpec()
    rng = np.random.default_rng([spec.seed, 99])
    texts: list[str] = []
    for _ in range(n):
        scene, scan = sample_shape_scene(rng), sample_scan(rng)
        texts.append(shapes_caption(scene, rng))
        texts.append(scan_caption(scan, rng))
        texts.extend(f"{qa.question} {qa.answer}" for qa in shapes_vqa(scene, rng) + scan_vqa(scan, rng))
        texts.extend(f"{q} {a}" for q, a in shapes_conversation(scene, rng) + scan_conversation(scan, rng))
    return texts
