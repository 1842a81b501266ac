"""Data, answer and model files that end in tracebacks unless handled (issue 11)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from medvlm.errors import DataError, ModelError
from medvlm.model.build import load_pretrained
from tests.helpers.data_fixtures import write_image


def _record(qid: str, image: str = "a.png") -> dict:
    return {"id": qid, "image": image, "conversations": [
        {"from": "human", "value": "<image>\nWhat colour?"}, {"from": "gpt", "value": "red"}]}


def test_deeply_nested_json_is_a_clear_error(cli, tmp_path: Path) -> None:
    data = tmp_path / "deep.json"
    data.write_text("[" * 100_000 + "]" * 100_000)
    cli("data", "inspect", "--dataset", "llava", "--path", data).refused(
        f"{data}: JSON nested too deeply to read", within=3)
    lines = tmp_path / "deep.jsonl"
    lines.write_text(json.dumps(_record("1")) + "\n" + '{"id": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    cli("data", "convert", "--dataset", "llava", "--path", lines, "--output", tmp_path / "o.json").refused(
        f"{lines}: record line 2: JSON nested too deeply to read", within=3)
    inspected = cli("data", "inspect", "--dataset", "llava", "--path", lines)  # a JSONL line: one bad record
    assert inspected.status == 0 and "record line 2: JSON nested too deeply to read" in inspected.out


def test_non_utf8_jsonl_names_the_file_and_line(cli, tmp_path: Path) -> None:
    data = tmp_path / "latin1.jsonl"
    data.write_bytes(json.dumps(_record("1")).encode() + b"\n" + '{"id": "caf\xe9"}'.encode("latin-1") + b"\n")
    cli("data", "convert", "--dataset", "llava", "--path", data, "--output", tmp_path / "o.json").refused(
        f"{data}: record line 2: not UTF-8 text (byte 11: invalid continuation byte)", within=3)


def test_non_utf8_answers_are_counted_never_replaced(cli, tmp_path: Path) -> None:
    write_image(tmp_path / "a.png")
    data = tmp_path / "test.json"
    data.write_text(json.dumps([_record("1"), _record("2")]))
    answers = tmp_path / "answers.jsonl"
    answers.write_bytes(b'{"question_id": "1", "text": "red"}\n{"question_id": "2", "text": "r\xe9d"}\n')
    common = ("score", "--dataset", "llava", "--path", data, "--predictions", answers, "--bootstrap", "0")
    cli(*common, "--output", tmp_path / "s.json").refused(f"{answers}: record line 2: not UTF-8 text", within=5)
    assert cli(*common, "--output", tmp_path / "s.json", "--on-bad-record", "skip").status == 0
    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["input_problems"]["count"] == 1 and "\ufffd" not in (tmp_path / "s.json").read_text()


def test_an_output_path_that_is_a_directory_or_under_a_file(cli, tmp_path: Path) -> None:
    write_image(tmp_path / "a.png")
    data = tmp_path / "test.json"
    data.write_text(json.dumps([_record("1")]))
    blocker = tmp_path / "file.txt"
    blocker.write_text("keep")
    convert = ("data", "convert", "--dataset", "llava", "--path", data, "--output")
    cli(*convert, tmp_path).refused(f"{tmp_path}: is a directory; give a file path", within=3)
    cli(*convert, blocker / "o.json").refused(f"{blocker / 'o.json'}: cannot be created: {blocker} is a file",
                                              within=3)
    predict = ("predict", "--model", tmp_path, "--dataset", "llava", "--path", data, "--output")
    cli(*predict, tmp_path / "a.png" / "x.jsonl").refused("is a file, not a directory", within=5)
    assert blocker.read_text() == "keep"


def test_a_data_file_is_never_written_over_by_its_own_command(cli, tmp_path: Path) -> None:
    """Answering or converting a data file into itself replaced it with the answers (predict) or the
    converted records (data convert)."""
    write_image(tmp_path / "a.png")
    data = tmp_path / "test.json"
    data.write_text(json.dumps([_record("1")]))
    kept = data.read_bytes()
    itself = f"{data}: is also this command's input ({data}); writing there would replace it"
    cli("data", "convert", "--dataset", "llava", "--path", data, "--output", data).refused(itself, within=3)
    cli("predict", "--model", tmp_path, "--dataset", "llava", "--path", data, "--output", data).refused(
        itself, within=5)
    link = tmp_path / "link.json"
    link.symlink_to(data)  # the same file by another name
    cli("data", "convert", "--dataset", "llava", "--path", data, "--output", link).refused(
        f"{link}: is also this command's input", within=3)
    answers = tmp_path / "answers.jsonl"
    answers.write_text(json.dumps({"question_id": "1", "text": "yes"}) + "\n")
    cli("score", "--dataset", "llava", "--path", data, "--predictions", answers, "--output", answers).refused(
        f"{answers}: is also this command's input", within=5)
    assert data.read_bytes() == kept and link.is_symlink()


def test_truncated_model_files_and_auto_map_are_model_errors(tmp_path: Path, micro_model_dir: Path, caplog) -> None:
    config = tmp_path / "cfg" / "config.json"
    shutil.copytree(micro_model_dir, config.parent)
    config.write_text(config.read_text()[:300])
    with pytest.raises(DataError, match=rf"{config}: not valid JSON at line \d+ column \d+"):
        load_pretrained(config.parent)
    weights = tmp_path / "st" / "model.safetensors"
    shutil.copytree(micro_model_dir, weights.parent)
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelError, match=f"{weights.parent}: cannot load model or processor: SafetensorError"):
        load_pretrained(weights.parent)
    custom = tmp_path / "custom"
    shutil.copytree(micro_model_dir, custom)
    settings = json.loads((custom / "config.json").read_text())
    (custom / "config.json").write_text(json.dumps({**settings, "auto_map": {"AutoConfig": "x.Cfg"}}))
    with pytest.raises(ModelError, match=f"{custom / 'config.json'}: key 'auto_map': the directory ships its own"):
        load_pretrained(custom)
    with caplog.at_level(logging.WARNING, logger="medvlm"):
        load_pretrained(micro_model_dir, trust_remote_code=True)
    assert f"trust_remote_code is true: Python code shipped in {micro_model_dir.resolve()} will run" in caplog.text


class _RunsCode:
    def __reduce__(self):
        return (print, ("code ran",))


def test_pickled_weights_with_code_and_weights_unlike_the_config_are_model_errors(
        tmp_path: Path, micro_model_dir: Path, capsys) -> None:
    """A pytorch_model.bin holding code ended in an UnpicklingError traceback (refused, badly reported);
    a config.json whose vocabulary disagrees with the weights in transformers' RuntimeError."""
    import pickle

    pickled = tmp_path / "pickled"
    shutil.copytree(micro_model_dir, pickled)
    (pickled / "model.safetensors").unlink()
    (pickled / "pytorch_model.bin").write_bytes(pickle.dumps({"weight": _RunsCode()}))
    with pytest.raises(ModelError, match=f"{pickled}: a pickled weights file .* refused, nothing in it was run"):
        load_pretrained(pickled)
    assert "code ran" not in capsys.readouterr().out
    resized = tmp_path / "resized"
    shutil.copytree(micro_model_dir, resized)
    settings = json.loads((resized / "config.json").read_text())
    settings["text_config"]["vocab_size"] += 7
    (resized / "config.json").write_text(json.dumps(settings))
    with pytest.raises(ModelError, match=f"{resized}: the weights do not match config.json"):
        load_pretrained(resized)


def test_messages_do_not_repeat_their_location() -> None:
    inner = DataError("image path '../x.png' leaves the image root", key="image")
    outer = DataError(str(inner), file="train.json", record="7", key="image")
    assert str(outer) == "train.json: record 7: key 'image': image path '../x.png' leaves the image root"


def test_convert_llava_names_a_truncated_safetensors_file(cli, tmp_path: Path) -> None:
    src = tmp_path / "llava-med"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"model_type": "llava_llama", "mm_hidden_size": 8, "hidden_size": 8}))
    (src / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    cli("convert-llava", src, tmp_path / "out").refused(
        f"{src / 'model.safetensors'}: not a readable safetensors file (SafetensorError", within=5)
    assert not (tmp_path / "out").exists()


def test_a_deeply_nested_answer_line_is_a_counted_problem(cli, tmp_path: Path) -> None:
    write_image(tmp_path / "a.png")
    data = tmp_path / "test.json"
    data.write_text(json.dumps([_record("1")]))
    answers = tmp_path / "answers.jsonl"
    answers.write_text('{"question_id": "1", "text": "red"}\n{"question_id": ' + "[" * 50_000 + "]" * 50_000 + "}\n")
    cli("score", "--dataset", "llava", "--path", data, "--predictions", answers, "--output", tmp_path / "s.json",
        "--bootstrap", "0").refused(f"{answers}: record line 2: JSON nested too deeply to read", within=5)


def test_inspect_output_stays_bounded_however_many_problems(cli, tmp_path: Path) -> None:
    """A data set whose image folder is missing listed every record's problem (4 MB for 30 000 records)."""
    data = tmp_path / "test.json"
    data.write_text(json.dumps([_record(str(i)) for i in range(500)]))  # no image exists
    result = cli("data", "inspect", "--dataset", "llava", "--path", data)
    assert result.status == 0 and "problems: 500" in result.out and "… 480 more (use --json for all)" in result.out
    assert len(result.out.splitlines()) < 45


def test_a_record_with_two_problems_is_one_skipped_record(cli, tmp_path: Path) -> None:
    """Probe J05: a record with a bad image *and* bad turns was counted as two skipped records."""
    write_image(tmp_path / "a.png")
    data = tmp_path / "test.json"
    data.write_text(json.dumps([{"id": "a1", "image": 5, "conversations": "nope"}, _record("b2"),
                                {"id": "c3", "image": "a.png", "conversations": []}]))
    result = cli("data", "inspect", "--dataset", "llava", "--path", data, "--json")
    inspected = json.loads(result.out)
    assert result.status == 0 and inspected["records_read"] == 3 and inspected["samples"] == 1
    assert inspected["skipped_records"] == 2 and len(inspected["problems"]) == 3  # every problem is listed
    convert = cli("data", "convert", "--dataset", "llava", "--path", data, "--output", tmp_path / "o.json",
                  "--on-bad-record", "skip")
    assert convert.status == 0 and "skipped 2 bad record(s)" in convert.err


def test_damaged_tokenizer_and_config_files_are_model_errors(tmp_path: Path, micro_model_dir: Path) -> None:
    """Probe F6: a tokenizer.json that is not JSON, no tokenizer at all, or a config value of the wrong
    type ended in JSONDecodeError / ValueError / StrictDataclass tracebacks."""
    garbage = shutil.copytree(micro_model_dir, tmp_path / "garbage")
    (garbage / "tokenizer.json").write_text("{garbage")
    with pytest.raises(ModelError, match=f"{garbage}: cannot load model or processor .*JSONDecodeError"):
        load_pretrained(garbage)
    missing = shutil.copytree(micro_model_dir, tmp_path / "missing")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (missing / name).unlink()
    with pytest.raises(ModelError, match=f"{missing}: cannot load model or processor"):
        load_pretrained(missing)
    typed = shutil.copytree(micro_model_dir, tmp_path / "typed")
    (typed / "config.json").write_text(json.dumps({**json.loads((typed / "config.json").read_text()),
                                                   "text_config": "x"}))
    with pytest.raises(ModelError, match=f"{typed}: cannot load model or processor .*'text_config'"):
        load_pretrained(typed)


def test_an_unreadable_jsonl_line_is_a_bad_record_under_skip(cli, tmp_path: Path) -> None:
    """Probe F13: ``--on-bad-record skip`` skipped a record of the wrong type but stopped at a line
    that is not JSON."""
    write_image(tmp_path / "a.png")
    data = tmp_path / "c.jsonl"
    data.write_text(json.dumps(_record("a")) + "\n{not json\n" + json.dumps(_record("b")) + "\n")
    convert = ("data", "convert", "--dataset", "llava", "--path", data, "--output", tmp_path / "o.json")
    cli(*convert).refused(f"{data}: record line 2: not valid JSON", within=5)
    result = cli(*convert, "--on-bad-record", "skip")
    assert result.status == 0 and "skipped 1 bad record(s)" in result.err
    assert [r["id"] for r in json.loads((tmp_path / "o.json").read_text())] == ["a", "b"]
