"""The llava_med source: alignment (misspelt 'conversatons'), instruct (domain flags), qa50 JSONL."""

from __future__ import annotations

from pathlib import Path

import pytest

from medvlm.data.sources import read_source
from medvlm.errors import DataError
from tests.helpers.data_fixtures import write_json, write_jsonl

FLAGS = {"chest_xray": False, "mri": False, "ct_scan": True, "histology": False, "gross": False}

ALIGNMENT = [
    {"id": "PMC1_F1", "image": "PMC1_F1.jpg", "conversatons": [
        {"from": "human", "value": "Give a short and clear explanation of the subsequent image.\n<image>"},
        {"from": "gpt", "value": "Axial CT showing a hepatic lesion."}]},
    {"id": "PMC2_F3", "image": "PMC2_F3.jpg", "conversations": [  # the correct spelling is accepted too
        {"from": "human", "value": "<image>\nDescribe the image concisely."},
        {"from": "gpt", "value": "Chest radiograph."}]},
]

INSTRUCT = [
    {"id": "i1", "image": "11_F2.jpg", "domain": FLAGS, "conversations": [
        {"from": "human", "value": "What does the CT show?\n<image>"}, {"from": "gpt", "value": "A mass."},
        {"from": "human", "value": "Where?"}, {"from": "gpt", "value": "In the liver."}]},
    {"id": "i2", "image": "12_F1.jpg", "domain": {**FLAGS, "ct_scan": False, "mri": True, "histology": True},
     "conversations": [{"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": "Two panels."}]},
]

QA50 = [
    {"question_id": 0, "image": "18063892_F3.jpg", "pair_id": "18063892_F3",
     "text": "What is the organ in the image?\n<image>", "gpt4_answer": "The conjunctiva.",
     "fig_caption": "Histopathology (H & E stain, \u00d7100)", "in_text_mention": [
         {"tokens": "Inflammatory cells ( Fig. 3 ) .", "entities": [{"type": "figure", "entity_id": "3",
                                                                    "start_tok": 3, "end_tok": 5}]}],
     "domain": {**FLAGS, "ct_scan": False, "histology": True}, "type": "conversation", "fig_label": "Fig. 3"},
    {"question_id": 1, "image": "18063892_F3.jpg", "pair_id": "18063892_F3", "text": "Describe the figure.\n<image>",
     "gpt4_answer": "A section.", "fig_caption": "c", "in_text_mention": None,  # null in 14 records
     "domain": {**FLAGS, "ct_scan": False, "histology": True}, "type": "detailed_description", "fig_label": "Fig. 3"},
]


def test_alignment_with_misspelt_key(tmp_path: Path) -> None:
    path = write_json(tmp_path / "llava_med_alignment_500k.json", ALIGNMENT)
    samples, report = read_source("llava_med", str(path), "train")
    assert [s.id for s in samples] == ["llava_med-PMC1_F1", "llava_med-PMC2_F3"] and report.skipped == 0
    assert samples[0].turns[1].text == "Axial CT showing a hepatic lesion."
    assert samples[0].meta.extra["format"] == "alignment" and samples[0].image_root == str(tmp_path)
    (tmp_path / "images").mkdir()  # LLaVA-Med's layout: images/ beside the JSON
    assert read_source("llava_med", str(path), "train")[0][0].image_root == str(tmp_path / "images")


def test_instruct_domains(tmp_path: Path) -> None:
    path = write_json(tmp_path / "llava_med_instruct_10k.json", INSTRUCT)
    samples, _ = read_source("llava_med", str(path), "train")
    assert [len(s.turns) for s in samples] == [4, 2]
    assert samples[0].meta.modality == "CT" and samples[1].meta.modality == "mixed"
    assert samples[0].meta.extra["domain"]["ct_scan"] is True and samples[0].meta.extra["format"] == "instruct"
    assert [s.id for s in read_source("llava_med", str(path), "train", domains=["mri"])[0]] == ["llava_med-i2"]
    with pytest.raises(DataError, match="option domains: unknown xray"):
        read_source("llava_med", str(path), "train", domains=["xray"])


def test_qa50_eval_file(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "llava_med_eval_qa50_qa.jsonl", QA50)
    samples, _ = read_source("llava_med", str(path), "test")
    first, second = samples
    assert first.id == "llava_med-qa50-0" and first.meta.source_id == "0"
    assert first.question == "What is the organ in the image?" and first.answer == "The conjunctiva."
    assert first.turns[0].text.startswith("<image>\n") and first.images == ["18063892_F3.jpg"]
    assert first.meta.question_type == "conversation" and second.meta.question_type == "detailed_description"
    assert first.meta.modality == "Histology" and first.meta.extra["fig_label"] == "Fig. 3"
    assert second.meta.extra["in_text_mention"] is None


def test_bad_llava_med_records(tmp_path: Path) -> None:
    bad_flags = [{**INSTRUCT[0], "domain": {"ct_scan": "yes"}}, {**INSTRUCT[1], "domain": {"xray": True}},
                 {"id": "n", "image": "x.jpg", "domain": FLAGS}]
    path = write_json(tmp_path / "instruct.json", bad_flags)
    samples, report = read_source("llava_med", str(path), "train", policy="skip")
    assert samples == [] and [(p.record, p.key) for p in report.problems] == [
        ("i1", "domain"), ("i2", "domain"), ("n", "conversations")]
    qa = write_jsonl(tmp_path / "qa.jsonl", [{**QA50[0], "gpt4_answer": None}])
    with pytest.raises(DataError, match=r"qa.jsonl: record 0: key 'gpt4_answer': value is null"):
        read_source("llava_med", str(qa), "test")
