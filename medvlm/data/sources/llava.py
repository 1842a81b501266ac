"""LLaVA conversation JSON/JSONL — the format LLaVA, LLaVA-Med and most VLM trainers use.

``{"id", "image": "rel/path.jpg" | [...], "conversations": [{"from": "human", "value": ...},
{"from": "gpt", "value": ...}, ...]}``; text-only samples have no ``image``. The downstream
converted format adds ``answer_type`` and ``question_type``; ``modality``, ``organ``/``location``
and ``language`` are kept when present.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medvlm.data import fields
from medvlm.data.records import Sample, SampleMeta, Turn
from medvlm.data.sources import ReadReport, register_source
from medvlm.errors import DataError

ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}


def parse_conversation(turns: Any, report: ReadReport, *, file: str, record: str,
                       key: str = "conversations") -> list[Turn] | None:
    """LLaVA ``[{from, value}]`` turns → :class:`Turn` list, or None after reporting a problem."""
    if not isinstance(turns, list) or not turns:
        report.problem("expected a non-empty list of turns", file=file, record=record, key=key)
        return None
    parsed: list[Turn] = []
    for index, turn in enumerate(turns):
        where = f"{key}[{index}]"
        if not isinstance(turn, dict):
            report.problem(f"expected an object, got {type(turn).__name__}", file=file, record=record, key=where)
            return None
        role = ROLES.get(str(turn.get("from", "")).lower())
        if role is None:
            report.problem(f"unknown speaker {turn.get('from')!r} (expected human or gpt)", file=file,
                           record=record, key=f"{where}.from")
            return None
        value = turn.get("value")
        if not isinstance(value, str):
            report.problem(f"expected text, got {type(value).__name__}", file=file, record=record,
                           key=f"{where}.value")
            return None
        parsed.append(Turn(role, value))
    for index, turn in enumerate(parsed):
        if turn.role != ("user" if index % 2 == 0 else "assistant"):
            report.problem("turns must alternate human/gpt starting with human", file=file, record=record,
                           key=f"{key}[{index}].from")
            return None
    return parsed


def image_list(value: Any, report: ReadReport, *, file: str, record: str) -> list[str] | None:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    report.problem("expected an image path or a list of paths", file=file, record=record, key="image")
    return None


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value).strip()


def read_conversation_file(path: str | Path, split: str, report: ReadReport, *, dataset: str,
                           image_root: str | None = None, conversation_key: str = "conversations",
                           ) -> Iterator[Sample]:
    """Shared by every reader of LLaVA-shaped files (llava, llava_med, synthetic)."""
    file = str(path)
    root = image_root if image_root is not None else str(Path(path).parent)
    seen: set[str] = set()
    for location, record in fields.object_records(path, report, file=file):
        record_id = str(record.get("id", location))
        if record_id in seen:
            report.problem("duplicate id", file=file, record=record_id, key="id")
            continue
        seen.add(record_id)
        if conversation_key not in record:
            report.problem("missing key", file=file, record=record_id, key=conversation_key)
            continue
        turns = parse_conversation(record[conversation_key], report, file=file, record=record_id,
                                   key=conversation_key)
        images = image_list(record.get("image"), report, file=file, record=record_id)
        if turns is None or images is None:
            continue
        answer_type = _text_or_none(record.get("answer_type"))
        meta = SampleMeta(
            dataset=dataset, split=split,
            answer_type=answer_type.upper() if answer_type else None,  # type: ignore[arg-type]
            modality=_text_or_none(record.get("modality")),
            organ=_text_or_none(record.get("organ", record.get("location"))),
            question_type=_text_or_none(record.get("question_type")),
            language=_text_or_none(record.get("language", record.get("q_lang"))) or "en",
            source_id=record_id)
        if meta.answer_type not in (None, "OPEN", "CLOSED"):
            report.problem(f"answer_type {answer_type!r} is neither OPEN nor CLOSED", file=file,
                           record=record_id, key="answer_type")
            continue
        yield Sample(id=record_id, turns=turns, meta=meta, images=images, image_root=root)


@register_source("llava")
def read(path: str | None, split: str, report: ReadReport, image_root: str | None = None,
         **options: Any) -> Iterator[Sample]:
    if path is None:
        raise DataError("the llava source needs a path to a .json or .jsonl file")
    if options:
        raise DataError(f"unknown option(s) for the llava source: {', '.join(options)}", file=path)
    yield from read_conversation_file(path, split, report, dataset="llava", image_root=image_root)
