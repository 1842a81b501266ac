"""``medvlm data inspect``: what a data set holds and everything wrong with it, before any training.

Reads a source the way training would, but collects every bad record instead of stopping at the
first (the ``skip`` policy), then checks the images the records reference. Counts: samples per
answer type (``OPEN``/``CLOSED``), modality, organ/location, question/content type and language;
images referenced, present, missing, unreadable and refused (outside the image root); DICOM files by
modality (allow-listed metadata only). Each problem is listed with its file, record id and key.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from medvlm.data.images import ImageCheckMode
from medvlm.data.reading import read_spec, source_spec
from medvlm.data.records import BREAKDOWN_FIELDS, Sample
from medvlm.errors import DataError
from medvlm.io import sha256_file

UNSET = "(unset)"


def field_counts(samples: list[Sample]) -> dict[str, dict[str, int]]:
    """Per breakdown field, value → number of samples (most common first)."""
    counts: dict[str, dict[str, int]] = {}
    for name in BREAKDOWN_FIELDS:
        counter = Counter(str(getattr(s.meta, name)) if getattr(s.meta, name) is not None else UNSET
                          for s in samples)
        counts[name] = dict(counter.most_common())
    return counts


def inspect_dataset(name: str, path: str | None, split: str, *, image_root: str | None = None,
                    image_check: ImageCheckMode = "header", options: dict[str, Any] | None = None,
                    ) -> dict[str, Any]:
    """Counts and problems of one source read, as a JSON-ready mapping."""
    read = read_spec(source_spec(name, path, split, image_root=image_root, options=options), policy="skip",
                     image_check=image_check)
    report, images = read.report, read.images
    samples = read.samples + read.rejected  # a record with a bad image is still a record of the data set
    problems = [{"file": p.file, "record": p.record, "key": p.key, "message": p.message} for p in report.problems]
    data_file = Path(path) if path else None
    return {
        "dataset": name, "path": path, "split": split, "options": options or {},
        "sha256": sha256_file(data_file) if data_file is not None and data_file.is_file() else None,
        "records_read": report.read, "samples": len(samples), "skipped_records": read.records_skipped,
        "counts": {"total": len(samples), **field_counts(samples)},
        "with_images": sum(1 for s in samples if s.images),
        "samples_with_image_problems": len(images.bad),
        "images": images.summary(),
        "problems": problems,
    }


def raise_first_problem(result: dict[str, Any]) -> None:
    """``--strict``: a data set with any problem is an error (exit 2), naming the first problem."""
    if result["problems"]:
        first = result["problems"][0]
        raise DataError(f"{len(result['problems'])} problem(s), the first: {first['message']}",
                        file=first["file"], record=first["record"], key=first["key"])


def _line(label: str, counts: dict[str, int], limit: int = 25) -> str:
    items = list(counts.items())
    shown = " · ".join(f"{value} {count}" for value, count in items[:limit])
    more = f" · … {len(items) - limit} more" if len(items) > limit else ""
    return f"  {label}: {shown or '-'}{more}"


def format_inspection(result: dict[str, Any], max_problems: int | None = 20) -> str:
    """The human-readable report ``medvlm data inspect`` prints: every count, and the first
    ``max_problems`` problems (a data set with an image folder missing has one per record: tens of
    thousands of lines would bury the counts; ``None`` lists them all)."""
    counts, images = result["counts"], result["images"]
    lines = [f"{result['dataset']} · split {result['split']} · {result['path']}",
             f"records read {result['records_read']} · samples {result['samples']} · "
             f"skipped records {result['skipped_records']}",
             "counts:", f"  total: {counts['total']}"]
    lines += [_line(name, counts[name]) for name in BREAKDOWN_FIELDS]
    if images["mode"] != "none":
        lines.append(f"images ({images['mode']} check): {images['referenced']} referenced · "
                     f"{images['present']} present · "
                     f"{images['missing']} missing · {images['unreadable']} unreadable · {images['refused']} refused "
                     f"(outside the image root) · {result['samples_with_image_problems']} of "
                     f"{result['with_images']} samples affected")
        if images["dicom_files"]:
            lines.append(_line(f"DICOM files ({images['dicom_files']}) by modality", images["dicom_modalities"]))
    problems = result["problems"]
    lines.append(f"problems: {len(problems)}" + ("" if problems else " (none)"))
    shown = problems if max_problems is None else problems[:max_problems]
    for problem in shown:
        where = [part for part in (problem["file"], problem["record"] and f"record {problem['record']}",
                                   problem["key"] and f"key '{problem['key']}'") if part]
        lines.append(f"  {': '.join(where)}: {problem['message']}")
    if len(shown) < len(problems):
        lines.append(f"  … {len(problems) - len(shown)} more (use --json for all)")
    return "\n".join(lines)
