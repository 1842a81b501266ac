"""The server through the official OpenAI client and raw HTTP: answers, streaming, batching, 4xx errors."""

from __future__ import annotations

import base64
import json
import logging
import threading
from pathlib import Path

import httpx
import openai
import pytest

from medvlm.data.records import SampleMeta, vqa_sample
from medvlm.eval.generation import GenerationItem
from tests.helpers.serving import png_data_url, start

QUESTION = "Which organ is shown in this image?"


def image_message(url: str, question: str = QUESTION) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                         {"type": "text", "text": question}]}]


@pytest.fixture(scope="module")
def server(micro_generator, tmp_path_factory):
    root = tmp_path_factory.mktemp("image_root")
    (root / "scan.png").write_bytes(base64.b64decode(png_data_url().split(",", 1)[1]))
    thread, engine = start(micro_generator, image_root=str(root), max_body_bytes=200_000, max_batch_size=4,
                           batch_window_ms=50)
    with thread:
        yield thread
    engine.close()


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0)


def local_answer(generator, question: str, url: str | None, max_tokens: int = 8) -> str:
    """What the model answers in-process for the same question (the encoding predict uses)."""
    sample = vqa_sample(id="q", question=question, answer=None, image="x.png" if url else None,
                        meta=SampleMeta(dataset="t", split="test"))
    pixels = None
    if url:
        from medvlm.serve.media import MediaPolicy, decode_image, read_image

        pixels = generator.image_pixels([decode_image(read_image(url, MediaPolicy()), MediaPolicy())])
    item = GenerationItem(generator.prompt_ids(sample), pixels, max_tokens, generator.stops)
    return generator.generate([item])[0].text


def test_models_and_health(client, server) -> None:
    assert [model.id for model in client.models.list().data] == ["micro"]
    health = httpx.get(f"{server.root}/health").json()
    assert health["status"] == "ok" and health["model"] == "micro"


def test_plain_and_streamed_answers_with_an_image(client, micro_generator) -> None:
    url = png_data_url()
    plain = client.chat.completions.create(model="micro", messages=image_message(url), max_tokens=8, temperature=0)
    answer = plain.choices[0].message.content
    assert answer == local_answer(micro_generator, QUESTION, url)
    assert plain.choices[0].finish_reason == "length" and plain.usage.completion_tokens == 8
    assert plain.object == "chat.completion" and plain.model == "micro"
    stream = client.chat.completions.create(model="micro", messages=image_message(url), max_tokens=8, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(pieces) == answer and len(pieces) > 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == plain.usage.total_tokens
    # the image changes the answer (the check above is not vacuous)
    other = client.chat.completions.create(model="micro", messages=image_message(png_data_url(colour=(30, 200, 30))),
                                           max_tokens=8, temperature=0)
    text_only = client.chat.completions.create(model="micro", messages=[{"role": "user", "content": QUESTION}],
                                               max_tokens=8, temperature=0)
    assert len({answer, other.choices[0].message.content, text_only.choices[0].message.content}) == 3


def test_image_path_under_the_root(client, micro_generator) -> None:
    by_path = client.chat.completions.create(model="micro", messages=image_message("scan.png"), max_tokens=8)
    assert by_path.choices[0].message.content == local_answer(micro_generator, QUESTION, png_data_url())


def test_concurrent_requests_are_batched_and_answered_as_alone(client, server, micro_generator) -> None:
    questions = [f"Is finding number {i} present?" for i in range(6)]
    answers: dict[str, str] = {}

    def ask(question: str) -> None:
        result = client.chat.completions.create(model="micro", messages=[{"role": "user", "content": question}],
                                                max_tokens=6)
        answers[question] = result.choices[0].message.content

    before = httpx.get(f"{server.root}/health").json()["engine"]
    threads = [threading.Thread(target=ask, args=(q,)) for q in questions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after = httpx.get(f"{server.root}/health").json()["engine"]
    assert after["requests"] - before["requests"] == 6
    assert after["batches"] - before["batches"] < 6 and after["largest_batch"] > 1
    assert answers == {q: local_answer(micro_generator, q, None, 6) for q in questions}


def post(server, body: bytes | dict, **headers) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{server.url}/chat/completions", content=content,
                      headers={"content-type": "application/json", **headers})


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b'{"model": "micro", "messages": [', 400, "not valid JSON"),
        (b'{"model": "micro", "messages": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", 400,
         "nested too deeply"),  # was a 500 with a RecursionError traceback in the log (probe N12)
        ({"model": "micro", "messages": "hello"}, 400, "messages: Input should be a valid list"),
        ({"model": "micro", "messages": [{"role": "user", "content": 5}]}, 400, "messages.0.content"),
        ({"model": "micro", "messages": [{"role": "user", "content": "x"}], "max_tokens": "8"}, 400, "max_tokens"),
        ({"model": "micro", "messages": [{"role": "user", "content": "x"}], "max_tokens": 100000}, 400,
         "more than this server's limit"),
        ({"model": "other", "messages": [{"role": "user", "content": "x"}]}, 404, "model 'other' is not served"),
        ({"model": "micro", "messages": image_message("../outside.png")}, 403, "outside the server's image root"),
        ({"model": "micro", "messages": image_message("/etc/passwd")}, 403, "outside the server's image root"),
        ({"model": "micro", "messages": image_message("http://127.0.0.1:9/scan.png")}, 400,
         "remote image URLs are disabled"),
        ({"model": "micro", "messages": image_message("data:image/png;base64," + "A" * 300_000)}, 413,
         "request body is larger than the limit of 200,000 bytes"),
    ],
)
def test_bad_requests_get_json_errors_and_the_server_keeps_serving(server, client, body, status, message) -> None:
    response = post(server, body)
    assert response.status_code == status
    error = response.json()["error"]
    assert message in error["message"] and set(error) == {"message", "type", "param", "code"}
    assert client.chat.completions.create(model="micro", messages=[{"role": "user", "content": "ok?"}],
                                          max_tokens=2).choices[0].message.content is not None


def test_unknown_routes_and_methods(server) -> None:
    assert httpx.get(f"{server.url}/nothing").json()["error"]["type"] == "not_found_error"
    assert httpx.get(f"{server.url}/chat/completions").status_code == 405
    assert httpx.get(f"{server.root}/static/../server.py").status_code == 404


def test_an_api_key_is_required_when_set(micro_generator) -> None:
    thread, engine = start(micro_generator, api_key="s3cret")
    try:
        with thread:
            with pytest.raises(openai.AuthenticationError):
                openai.OpenAI(base_url=thread.url, api_key="wrong", max_retries=0).models.list()
            keyed = openai.OpenAI(base_url=thread.url, api_key="s3cret", max_retries=0)
            assert keyed.chat.completions.create(model="micro", messages=[{"role": "user", "content": "x"}],
                                                 max_tokens=2).choices
            assert httpx.get(f"{thread.root}/health").status_code == 200  # liveness needs no key
            assert httpx.get(f"{thread.root}/").status_code == 200  # the page itself holds nothing
    finally:
        engine.close()


def test_logs_hold_no_request_content(client, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "Patient Jane Roe, born 1950, MRN 12345: is there a mass?"
    client.chat.completions.create(model="micro", messages=image_message(png_data_url(), secret), max_tokens=4)
    post_bad = image_message("../../etc/shadow-jane-roe.png", secret)
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="micro", messages=post_bad, max_tokens=4)
    # the server's own loggers (the test's client libraries log URLs of their own)
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith(("medvlm", "uvicorn", "starlette")))
    assert "chat 200" in logged and "chat 403" in logged
    for fragment in ("Jane", "12345", "shadow", "127.0.0.1", "base64"):
        assert fragment not in logged


def test_the_page_and_its_script_are_served_with_a_strict_policy(server) -> None:
    page = httpx.get(f"{server.root}/")
    assert page.status_code == 200 and 'id="file"' in page.text and "/static/app.js" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    script = httpx.get(f"{server.root}/static/app.js")
    assert script.status_code == 200 and "text/javascript" in script.headers["content-type"]
    assert "innerHTML" not in script.text  # answers are inserted as text


def test_preview_renders_what_the_model_sees(server) -> None:
    from pydicom.data import get_testdata_file

    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    dicom = "data:application/dicom;base64," + base64.b64encode(data).decode()
    lung = httpx.post(f"{server.url}/medvlm/preview", json={"image": dicom, "dicom": {"window": "lung"}}).json()
    bone = httpx.post(f"{server.url}/medvlm/preview", json={"image": dicom, "dicom": {"window": "bone"}}).json()
    assert lung["dicom"] and lung["png"].startswith("data:image/png;base64,") and lung["png"] != bone["png"]
    assert (lung["width"], lung["height"]) == (128, 128)
    assert set(lung) == {"png", "width", "height", "dicom"}  # nothing from the DICOM header
    bad = httpx.post(f"{server.url}/medvlm/preview", json={"image": 5})
    assert bad.status_code == 400
