"""LLaVA-Med's released data (Li et al., 2023; CC BY-NC 4.0, research use only).

Three formats, told apart by their keys (or ``format: alignment | instruct | qa50``):

* **alignment** (``llava_med_alignment_500k.json``): LLaVA conversation records whose turns sit
  under the misspelt key ``conversatons`` (the correctly spelt key is accepted too): a brief
  "describe the image" instruction and the PMC caption — stage 1.
* **instruct** (``llava_med_instruct_{10k,60k,60k_inline_mention,fig_captions}.json``): multi-turn
  GPT-4 conversations plus ``domain`` flags (``chest_xray, mri, ct_scan, histology, gross``) — stage 2.
* **qa50** (``llava_med_eval_qa50_qa.jsonl``): 193 evaluation questions over 50 PMC figures,
  ``question_id``, ``text`` (question + ``"\\n<image>"``), ``gpt4_answer`` (the reference), ``type``
  (conversation | detailed_description), ``fig_caption``, ``in_text_mention`` (list or null),
  ``domain``.

Meta: ``meta.modality`` is the domain when exactly one flag is set (``chest_xray`` → X-Ray, ``mri``
→ MRI, ``ct_scan`` → CT, ``histology`` → Histology, ``gross`` → Gross), ``mixed`` when several are;
the flags themselves are in ``meta.extra["domain"]``. ``domains: [ct_scan, mri]`` keeps records with
any of those flags. qa50: ``question_type`` = ``type``, ``source_id`` = ``question_id``, the caption,
pair id and figure label in ``meta.extra``. Images are ``PMID_Fn.jpg`` names relative to the image
root (default: an ``images/`` folder beside the file, else the file's folder).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medvlm.data import fields
from medvlm.data.fields import Invalid
from medvlm.data.records import IMAGE_PLACEHOLDER, Sample, SampleMeta, Turn
from medvlm.data.sources import ReadReport, register_source
from medvlm.data.sources.llava import image_list, parse_conversation
from medvlm.errors import DataError

FORMATS = ("auto", "alignment", "instruct", "qa50")
DOMAINS = {"chest_xray": "X-Ray", "mri": "MRI", "ct_scan": "CT", "histology": "Histology", "gross": "Gross"}
CONVERSATION_KEYS = ("conversatons", "conversations")  # the release misspells it; accept both


def detect_format(record: dict[str, Any]) -> str:
    if "gpt4_answer" in record or ("question_id" in record and "text" in record):
        return "qa50"
    if "conversatons" in record:
        return "alignment"
    return "instruct" if "domain" in record else "alignment"


def domain_flags(record: dict[str, Any]) -> dict[str, bool] | None:
    value = record.get("domain")
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(v, bool) for v in value.values()):
        raise Invalid("expected a mapping of domain flags to true/false", "domain")
    unknown = sorted(set(value) - set(DOMAINS))
    if unknown:
        raise Invalid(f"unknown domain flag(s) {', '.join(unknown)}; known: {', '.join(DOMAINS)}", "domain")
    return dict(value)


def modality_of(flags: dict[str, bool] | None) -> str | None:
    on = [DOMAINS[name] for name, flag in (flags or {}).items() if flag]
    return on[0] if len(on) == 1 else ("mixed" if on else None)


def _conversation_sample(record: dict[str, Any], location: str, report: ReadReport, *, file: str, split: str,
                         root: str, fmt: str) -> Sample | None:
    record_id = fields.record_id(record, "id") if "id" in record else location
    key = next((k for k in CONVERSATION_KEYS if k in record), None)
    if key is None:
        raise Invalid("missing key", "conversatons" if fmt == "alignment" else "conversations")
    turns = parse_conversation(record[key], report, file=file, record=record_id, key=key)
    images = image_list(record.get("image"), report, file=file, record=record_id)
    if turns is None or images is None:
        return None
    flags = domain_flags(record)
    meta = SampleMeta(dataset="llava_med", split=split, modality=modality_of(flags), language="en",
                      source_id=record_id, extra={"format": fmt, **({"domain": flags} if flags else {})})
    return Sample(id=f"llava_med-{record_id}", turns=turns, meta=meta, images=images, image_root=root)


def _qa50_sample(record: dict[str, Any], *, split: str, root: str) -> Sample:
    question_id = fields.record_id(record, "question_id")
    question = fields.text(record, "text")
    answer = fields.text(record, "gpt4_answer")
    image = fields.text(record, "image")
    question = question.replace(IMAGE_PLACEHOLDER, "").strip()  # type: ignore[union-attr]
    mentions = record.get("in_text_mention")
    if mentions is not None and not isinstance(mentions, list):
        raise Invalid("expected a list or null", "in_text_mention")
    flags = domain_flags(record)
    extra = {"format": "qa50", "pair_id": fields.text(record, "pair_id", required=False),
             "fig_caption": fields.text(record, "fig_caption", required=False),
             "fig_label": fields.text(record, "fig_label", required=False),
             "in_text_mention": mentions, **({"domain": flags} if flags else {})}
    meta = SampleMeta(dataset="llava_med", split=split, modality=modality_of(flags),
                      question_type=fields.text(record, "type", required=False), language="en",
                      source_id=question_id, extra=extra)
    return Sample(id=f"llava_med-qa50-{question_id}",
                  turns=[Turn("user", f"{IMAGE_PLACEHOLDER}\n{question}"), Turn("assistant", answer)],  # type: ignore[arg-type]
                  meta=meta, images=[image], image_root=root)  # type: ignore[list-item]


@register_source("llava_med")
def read(path: str | None, split: str, report: ReadReport, image_root: str | None = None,
         format: str = "auto", domains: list[str] | None = None, **options: Any) -> Iterator[Sample]:
    if path is None:
        raise DataError("the llava_med source needs a path to an alignment / instruct JSON or the qa50 JSONL")
    fields.check_options("llava_med", options, (), file=path)
    if format not in FORMATS:
        raise DataError(f"option format must be one of {', '.join(FORMATS)}", file=path, key="format")
    wanted = set(domains or ())
    if wanted - set(DOMAINS):
        raise DataError(f"option domains: unknown {', '.join(sorted(wanted - set(DOMAINS)))}; known: "
                        f"{', '.join(DOMAINS)}", file=path, key="domains")
    data_file = Path(path)
    root = image_root if image_root is not None else \
        str(fields.first_existing([data_file.parent / "images"]) or data_file.parent)
    ids = fields.UniqueIds("id")
    fmt = format
    for location, record in fields.object_records(data_file, report, file=path):
        if fmt == "auto":
            fmt = detect_format(record)
        where = str(record.get("question_id" if fmt == "qa50" else "id", location))
        try:
            sample = _qa50_sample(record, split=split, root=root) if fmt == "qa50" else \
                _conversation_sample(record, location, report, file=path, split=split, root=root, fmt=fmt)
            if sample is None:
                continue
            flags = sample.meta.extra.get("domain") or {}
            if wanted and not any(flags.get(name) for name in wanted):
                continue
            ids.add(sample.meta.source_id)  # type: ignore[arg-type]
        except Invalid as bad:
            report.problem(bad.message, file=path, record=where, key=bad.key)
            continue
        yield sample
