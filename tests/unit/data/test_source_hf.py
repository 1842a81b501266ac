"""The hf source: save_to_disk directories, Arrow and parquet files, configurable columns."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from medvlm.data.sources import read_source
from medvlm.errors import DataError
from tests.helpers.data_fixtures import write_image


def png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (6, 6), colour).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def vqa_table():
    import datasets

    features = datasets.Features({"image": datasets.Image(), "question": datasets.Value("string"),
                                  "answer": datasets.Value("string"), "qid": datasets.Value("int64"),
                                  "location": datasets.Value("string")})
    return datasets.Dataset.from_dict(
        {"image": [{"bytes": png((255, 0, 0)), "path": "red.png"}, {"bytes": png((0, 255, 0)), "path": None}, None],
         "question": ["Is it red?", "What colour is it?", "Text only?"], "answer": ["Yes", "green", "no"],
         "qid": [7, 8, 9], "location": ["Lung", "Brain", None]}, features=features)


def test_save_to_disk_dataset_dict(tmp_path: Path, vqa_table) -> None:
    import datasets

    datasets.DatasetDict({"train": vqa_table, "validation": vqa_table.select([0])}).save_to_disk(str(tmp_path / "dd"))
    cache = tmp_path / "cache"
    samples, report = read_source("hf", str(tmp_path / "dd"), "val", image_cache=str(cache), dataset_name="vqa_x")
    assert [s.id for s in samples] == ["vqa_x-7"] and report.read == 1
    samples, _ = read_source("hf", str(tmp_path / "dd"), "train", image_cache=str(cache))
    red, green, text = samples
    assert (red.meta.source_id, red.meta.answer_type, red.meta.organ, red.answer) == ("7", "CLOSED", "Lung", "Yes")
    assert green.meta.answer_type == "OPEN" and text.images == [] and text.turns[0].text == "Text only?"
    assert red.image_root == str(cache) and red.images[0].endswith(".png")
    assert Image.open(cache / red.images[0]).getpixel((0, 0)) == (255, 0, 0)
    assert read_source("hf", str(tmp_path / "dd"), "train", image_cache=str(cache))[0][0].images == red.images
    with pytest.raises(DataError, match="unknown split 'test'; this data has: train, validation"):
        read_source("hf", str(tmp_path / "dd"), "test", image_cache=str(cache))


def test_parquet_hub_layout_and_arrow_file(tmp_path: Path, vqa_table) -> None:
    (tmp_path / "repo" / "data").mkdir(parents=True)
    vqa_table.to_parquet(str(tmp_path / "repo" / "data" / "test-00000-of-00002.parquet"))
    vqa_table.select([0]).to_parquet(str(tmp_path / "repo" / "data" / "test-00001-of-00002.parquet"))
    vqa_table.select([1]).to_parquet(str(tmp_path / "repo" / "data" / "train-00000-of-00001.parquet"))
    cache = str(tmp_path / "cache")
    test, _ = read_source("hf", str(tmp_path / "repo"), "test", image_cache=cache, policy="skip")
    assert [s.meta.source_id for s in test] == ["7", "8", "9"]  # the second shard repeats qid 7: skipped
    train, _ = read_source("hf", str(tmp_path / "repo"), "train", image_cache=cache)
    assert [s.meta.source_id for s in train] == ["8"]
    vqa_table.save_to_disk(str(tmp_path / "single"))
    arrow = next((tmp_path / "single").glob("*.arrow"))
    assert [s.answer for s in read_source("hf", str(arrow), "test", image_cache=cache)[0]] == ["Yes", "green", "no"]


def test_custom_columns_paths_and_conversations(tmp_path: Path) -> None:
    import datasets

    write_image(tmp_path / "imgs" / "a.png")
    table = datasets.Dataset.from_dict({
        "img": ["a.png", "../escape.png"], "q": ["What?", "Why?"], "a": ["a scan", "because"],
        "kind": ["OPEN", "open "],
        "turns": [[{"from": "human", "value": "<image>\nHi"}, {"from": "gpt", "value": "Hello"}],
                                             [{"from": "human", "value": "Bye"}, {"from": "gpt", "value": "Ciao"}]]})
    table.to_parquet(str(tmp_path / "vqa.parquet"))
    columns = {"question": "q", "answer": "a", "image": "img", "answer_type": "kind", "conversations": None}
    samples, _ = read_source("hf", str(tmp_path / "vqa.parquet"), "train", image_root=str(tmp_path / "imgs"),
                             columns=columns)
    assert [(s.meta.source_id, s.question, s.images, s.meta.answer_type) for s in samples] == [
        ("train-0", "What?", ["a.png"], "OPEN"), ("train-1", "Why?", ["../escape.png"], "OPEN")]
    assert samples[0].image_root == str(tmp_path / "imgs")  # escapes are refused by the image check, not here
    conversations, _ = read_source("hf", str(tmp_path / "vqa.parquet"), "train", columns={"conversations": "turns"})
    assert [len(s.turns) for s in conversations] == [2, 2] and conversations[0].turns[1].text == "Hello"
    with pytest.raises(DataError, match=r"column 'question_text' \(columns.question\) not in the data"):
        read_source("hf", str(tmp_path / "vqa.parquet"), "train", columns={"question": "question_text"})
    with pytest.raises(DataError, match="unknown key\\(s\\) in option columns: answers"):
        read_source("hf", str(tmp_path / "vqa.parquet"), "train", columns={"answers": "a"})
    with pytest.raises(DataError, match="no question/answer or conversations columns"):
        read_source("hf", str(tmp_path / "vqa.parquet"), "train", columns={"question": None, "conversations": None})


def test_unreadable_files(tmp_path: Path) -> None:
    bad = tmp_path / "broken.parquet"
    bad.write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match=r"broken.parquet: not a readable parquet file"):
        read_source("hf", str(bad), "train")
    with pytest.raises(DataError, match="file or folder not found"):
        read_source("hf", str(tmp_path / "none"), "train")
