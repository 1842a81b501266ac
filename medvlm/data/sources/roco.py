"""ROCO (Pelka et al., 2018): PMC figure–caption pairs, the public stand-in for PMC-15M.

A ROCO folder (``data/{train,validation,test}/{radiology,non-radiology}/``) holds tab-separated
side files keyed by ROCO id: ``captions.txt`` (``ROCO_ID\\t caption`` — note the space), and
optionally ``keywords.txt``, ``cuis.txt`` (UMLS concept ids), ``semtypes.txt`` (UMLS semantic types
as TUI/name pairs), ``dlinks.txt`` (the PMC archive and the image's name inside it) and
``licences.txt`` (CSV ``ROCO_ID,PMC_ID,CC``). Revised releases name them ``captions_*.txt`` etc.;
both are found. The fetch script stores images as ``images/<ROCO_ID>.jpg`` beside the side files.

``path`` is such a folder, its ``captions.txt``, or the ``data`` root (then ``split`` and ``subset``
— radiology by default — pick the folder). Each record becomes a stage-1 alignment sample in
LLaVA's pretraining shape: a brief-description instruction (one of :data:`BRIEF_INSTRUCTIONS`,
chosen deterministically from the id and ``seed``, or the fixed ``instruction`` option) with the
image, answered by the caption. Keywords, CUIs, semantic types, licence, PMC id and archive link are
kept in ``meta.extra``; ``licences: ["CC BY", ...]`` keeps only images under those licences (PMC
figures carry their article's licence, and many are non-commercial or non-CC).
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medvlm.data import fields
from medvlm.data.records import IMAGE_PLACEHOLDER, Sample, SampleMeta, Turn
from medvlm.data.sources import ReadReport, register_source
from medvlm.errors import DataError

#: LLaVA's instructions for brief image descriptions (its stage-1 pretraining data uses these).
BRIEF_INSTRUCTIONS = (
    "Describe the image concisely.",
    "Provide a brief description of the given image.",
    "Offer a succinct explanation of the picture presented.",
    "Summarize the visual content of the image.",
    "Give a short and clear explanation of the subsequent image.",
    "Share a concise interpretation of the image provided.",
    "Present a compact description of the photo's key features.",
    "Relay a brief, clear account of the picture shown.",
    "Render a clear and concise summary of the photo.",
    "Write a terse but informative summary of the picture.",
    "Create a compact narrative representing the image presented.",
)
SPLITS = ("train", "validation", "test")
SUBSETS = ("radiology", "non-radiology")
SIDE_FILES = ("keywords", "cuis", "semtypes", "dlinks")


def side_file(folder: Path, kind: str, suffix: str = ".txt") -> Path | None:
    exact = folder / f"{kind}{suffix}"
    if exact.is_file():
        return exact
    revised = sorted(folder.glob(f"{kind}_*{suffix}"))
    return revised[0] if len(revised) == 1 else None


def locate(path: str, split: str, subset: str) -> Path:
    """The folder holding ``captions*.txt``."""
    given = Path(path)
    if given.is_file():
        return given.parent
    if not given.is_dir():
        raise DataError("file or folder not found", file=path)
    if side_file(given, "captions"):
        return given
    split_dir = given / fields.canonical_split(split, [p.name for p in given.iterdir() if p.is_dir()] or SPLITS,
                                               file=path)
    folder = split_dir / subset
    if not side_file(folder, "captions"):
        raise DataError(f"no captions.txt in {folder}", file=path)
    return folder


def read_tab_file(path: Path) -> dict[str, list[str]]:
    """ROCO id → the non-empty tab-separated fields after it."""
    rows: dict[str, list[str]] = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            parts = line.rstrip("\n").split("\t")
            if parts[0].strip():
                rows[parts[0].strip()] = [p.strip() for p in parts[1:] if p.strip()]
    return rows


def read_licences(path: Path) -> dict[str, tuple[str, str]]:
    """ROCO id → (image name ``PMCID_file.jpg``, licence)."""
    with open(path, encoding="utf-8", newline="") as handle:
        return {row["ROCO_ID"].strip(): (row.get("PMC_ID", "").strip(), row.get("CC", "").strip())
                for row in csv.DictReader(handle) if row.get("ROCO_ID")}


def pick_instruction(record_id: str, seed: int) -> str:
    digest = hashlib.sha256(f"{seed}:{record_id}".encode()).digest()
    return BRIEF_INSTRUCTIONS[int.from_bytes(digest[:4], "big") % len(BRIEF_INSTRUCTIONS)]


def _extra(record_id: str, side: dict[str, dict[str, list[str]]], licences: dict[str, tuple[str, str]],
           subset: str) -> dict[str, Any]:
    semtypes = side["semtypes"].get(record_id, [])
    extra: dict[str, Any] = {
        "subset": subset,
        "keywords": side["keywords"].get(record_id, []),
        "cuis": side["cuis"].get(record_id, []),
        "semtypes": [[semtypes[i], semtypes[i + 1] if i + 1 < len(semtypes) else ""]
                     for i in range(0, len(semtypes), 2)],
    }
    link = side["dlinks"].get(record_id)
    if link:
        command = link[0].split()
        extra["archive_url"] = next((word for word in command if "://" in word), None)
        extra["archive_image"] = link[-1] if len(link) > 1 else None
    if record_id in licences:
        extra["pmc_image"], extra["licence"] = licences[record_id]
    return extra


@register_source("roco")
def read(path: str | None, split: str, report: ReadReport, image_root: str | None = None,
         subset: str = "radiology", instruction: str | None = None, seed: int = 0,
         licences: list[str] | None = None, **options: Any) -> Iterator[Sample]:
    if path is None:
        raise DataError("the roco source needs a path: a ROCO folder (with captions.txt) or the data root")
    fields.check_options("roco", options, (), file=path)
    if subset not in SUBSETS:
        raise DataError(f"option subset must be one of {', '.join(SUBSETS)}", file=path, key="subset")
    folder = locate(path, split, subset)
    captions_file = side_file(folder, "captions")
    assert captions_file is not None
    side = {kind: read_tab_file(found) if (found := side_file(folder, kind)) else {} for kind in SIDE_FILES}
    licence_file = side_file(folder, "licences")
    licence_map = read_licences(licence_file) if licence_file else {}
    wanted = set(licences) if licences else None
    root = image_root if image_root is not None else str(folder)
    file = str(captions_file)
    seen = fields.UniqueIds("ROCO_ID")
    with open(captions_file, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            report.read += 1
            record_id, sep, caption = line.rstrip("\n").partition("\t")
            record_id, caption = record_id.strip(), caption.strip()
            if not sep or not record_id:
                report.problem("expected 'ROCO_ID<TAB> caption'", file=file, record=f"line {number}")
                continue
            if not caption:
                report.problem("empty caption", file=file, record=record_id, key="caption")
                continue
            try:
                seen.add(record_id)
            except fields.Invalid as bad:
                report.problem(bad.message, file=file, record=record_id, key=bad.key)
                continue
            extra = _extra(record_id, side, licence_map, subset)
            if wanted is not None and extra.get("licence") not in wanted:
                continue
            prompt = instruction or pick_instruction(record_id, seed)
            meta = SampleMeta(dataset="roco", split=split, language="en", source_id=record_id, extra=extra)
            yield Sample(id=f"roco-{record_id}",
                         turns=[Turn("user", f"{IMAGE_PLACEHOLDER}\n{prompt}"), Turn("assistant", caption)],
                         meta=meta, images=[f"images/{record_id}.jpg"], image_root=root)
