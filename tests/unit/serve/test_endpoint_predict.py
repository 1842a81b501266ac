"""``medvlm predict --endpoint``: the same answer files as local prediction, resumable, clear when down."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
from pathlib import Path

import httpx
import pytest
from pydicom.data import get_testdata_file
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from medvlm.cli import main
from medvlm.data.records import SampleMeta, vqa_sample
from medvlm.data.sources import read_source
from medvlm.errors import DataError
from medvlm.eval.endpoint import EndpointClient, EndpointError, EndpointSettings, answer_through_endpoint, base_url
from medvlm.eval.predict import PredictSettings, generate_answers
from medvlm.serve.server import ServerThread
from tests.helpers.serving import start


@pytest.fixture(scope="module")
def questions(synthetic_dir: Path, synthetic_options: dict, tmp_path_factory) -> list:
    medical, _ = read_source("synthetic", str(synthetic_dir), "test", subset="medical_vqa", limit=8,
                             **synthetic_options)
    general, _ = read_source("synthetic", str(synthetic_dir), "test", subset="general_vqa", limit=3,
                             **synthetic_options)
    text_only = [vqa_sample(id=f"text-{i}", question=q, answer="yes", meta=SampleMeta(dataset="t", split="test"))
                 for i, q in enumerate(["Is the sky blue?", "Is water wet on a warm day?"])]
    root = tmp_path_factory.mktemp("dicom")
    shutil.copy(get_testdata_file("CT_small.dcm"), root / "ct.dcm")
    data = root / "dicom.json"
    data.write_text(json.dumps([{"id": "ct-1", "image": "ct.dcm", "conversations": [
        {"from": "human", "value": "<image>\nIs this a CT scan?"}, {"from": "gpt", "value": "yes"}]}]))
    dicom, _ = read_source("llava", str(data), "test", image_root=str(root), dicom={"window": "lung"})
    return medical + text_only + general + dicom


@pytest.fixture(scope="module")
def server(micro_generator):
    thread, engine = start(micro_generator, max_batch_size=4)
    with thread:
        yield thread
    engine.close()


def texts(rows: list[dict]) -> dict:
    return {str(row["question_id"]): row["text"] for row in rows}


@pytest.mark.parametrize("style", ["plain", "short_answer"])
def test_endpoint_answers_equal_local_prediction(micro_model, questions, server, tmp_path: Path, style) -> None:
    model, processor = micro_model
    local = generate_answers(model, processor, questions, PredictSettings(max_new_tokens=8, prompt_style=style),
                             output=tmp_path / "local.jsonl", show_progress=False)
    settings = EndpointSettings(max_new_tokens=8, prompt_style=style, model_id="micro@server", endpoint=server.url,
                                served_model="micro", concurrency=4)
    served = answer_through_endpoint(questions, settings, tmp_path / "served.jsonl", show_progress=False)
    assert len(served) == len(questions) == 14
    assert texts(served) == texts(local)
    assert len(set(texts(local).values())) >= 4  # the answers differ between questions: the check has teeth
    rows = [json.loads(line) for line in (tmp_path / "served.jsonl").read_text().splitlines()]
    assert set(rows[0]) == {"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}
    assert rows[0]["model_id"] == "micro@server"
    assert rows[0]["metadata"]["decoding"] == "greedy" and rows[0]["metadata"]["served_model"] == "micro"
    assert {r["prompt"] for r in rows} == {r["prompt"] for r in local}


def test_resume_and_settings_check(questions, server, tmp_path: Path) -> None:
    settings = EndpointSettings(max_new_tokens=4, endpoint=server.url, served_model="micro", model_id="m")
    out = tmp_path / "answers.jsonl"
    first = answer_through_endpoint(questions[:5], settings, out, show_progress=False)
    rest = answer_through_endpoint(questions, settings, out, show_progress=False)
    assert len(first) == 5 and len(rest) == len(questions) - 5
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == len({r["question_id"] for r in rows}) == len(questions)
    assert answer_through_endpoint(questions, settings, out, show_progress=False) == []
    other = EndpointSettings(max_new_tokens=9, endpoint=server.url, served_model="micro", model_id="m")
    with pytest.raises(DataError, match=r"cannot resume.*max_new_tokens 4 → 9"):
        answer_through_endpoint(questions, other, out, show_progress=False)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_down_endpoint_is_a_clear_error(synthetic_dir: Path, synthetic_options: dict, tmp_path: Path,
                                          capsys) -> None:
    out = tmp_path / "answers.jsonl"
    args = ["predict", "--endpoint", f"http://127.0.0.1:{_closed_port()}", "--served-model", "m",
            "--dataset", "synthetic", "--path", str(synthetic_dir), "--option", "subset=medical_vqa",
            "--option", f"general_images={json.dumps(synthetic_options['general_images'])}",
            "--option", f"medical_images={json.dumps(synthetic_options['medical_images'])}", "--output", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "cannot reach http://127.0.0.1:" in err and "/v1 (ConnectError); is the server running?" in err
    assert "Traceback" not in err and not out.exists()
    assert main(args[:3] + args[5:]) == 2
    assert "--endpoint needs --served-model NAME" in capsys.readouterr().err


def test_wrong_model_name_lists_the_served_ones(questions, server, tmp_path: Path) -> None:
    settings = EndpointSettings(endpoint=server.url, served_model="llava-med")
    with pytest.raises(EndpointError, match="does not serve model 'llava-med'; it serves: micro"):
        answer_through_endpoint(questions[:1], settings, tmp_path / "a.jsonl", show_progress=False)


def _flaky_app(failures: list[int]) -> Starlette:
    """Answers the statuses in ``failures`` first, then a completion."""
    calls = {"n": 0}

    async def chat(request):
        calls["n"] += 1
        if failures:
            status = failures.pop(0)
            return JSONResponse({"error": {"message": f"status {status}"}}, status_code=status,
                                headers={"Retry-After": "0"} if status == 429 else {})
        return JSONResponse({"choices": [{"message": {"role": "assistant", "content": f"ok {calls['n']}"}}]})

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


def test_transient_failures_are_retried_others_stop_the_run() -> None:
    async def ask(failures: list[int], retries: int) -> str:
        with ServerThread(_flaky_app(failures)) as thread:
            client = EndpointClient(thread.root, retries=retries, backoff_s=0.01)
            async with httpx.AsyncClient() as http:
                return await client.chat(http, {"model": "x", "messages": []}, record="7")

    assert asyncio.run(ask([503, 429, 502], retries=3)) == "ok 4"
    with pytest.raises(EndpointError, match=r"answered HTTP 503.*status 503"):
        asyncio.run(ask([503, 503], retries=1))
    with pytest.raises(EndpointError, match=r"answered HTTP 400 \(question 7\): status 400"):
        asyncio.run(ask([400], retries=3))


def test_base_url() -> None:
    assert base_url("http://127.0.0.1:8000") == "http://127.0.0.1:8000/v1"
    assert base_url("http://127.0.0.1:8000/v1/") == "http://127.0.0.1:8000/v1"
    assert base_url("https://api.example.org/openai/v1") == "https://api.example.org/openai/v1"
    with pytest.raises(EndpointError, match="not an http"):
        base_url("127.0.0.1:8000")


def test_bad_images_are_bad_records_before_any_request(tmp_path: Path, capsys) -> None:
    """Read as local prediction reads: a missing image is named (error policy) or skipped and counted
    (skip), before the endpoint — here a closed port — is ever contacted."""
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "ok.png")
    data = tmp_path / "data.json"
    data.write_text(json.dumps([
        {"id": f"q{i}", "image": image, "conversations": [{"from": "human", "value": "<image>\nIs it dark?"},
                                                          {"from": "gpt", "value": "yes"}]}
        for i, image in enumerate(["ok.png", "missing.png"])]))
    out = tmp_path / "answers.jsonl"
    args = ["predict", "--endpoint", f"http://127.0.0.1:{_closed_port()}", "--served-model", "m", "--dataset",
            "llava", "--path", str(data), "--image-root", str(tmp_path), "--split", "test", "--output", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "missing.png" in err and "data.json" in err and "cannot reach" not in err and not out.exists()
    assert main([*args, "--on-bad-record", "skip"]) == 2  # one good question left: now the closed port
    captured = capsys.readouterr().err
    assert "skipped 1 bad record(s)" in captured and "cannot reach http://127.0.0.1:" in captured
