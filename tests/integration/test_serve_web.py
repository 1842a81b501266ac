"""The web page in headless Chromium: load, upload an image or a DICOM file, ask, read the streamed answer."""

from __future__ import annotations

import base64
import io
import shutil
from pathlib import Path

import openai
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from medvlm.eval.generation import Generator
from tests.helpers.browser import Browser, require_chromium
from tests.helpers.serving import start

QUESTION = "Which organ is shown?"


@pytest.fixture(scope="module")
def server(micro_model):
    require_chromium()
    thread, engine = start(Generator(*micro_model))
    with thread:
        yield thread
    engine.close()


def ask(browser: Browser, question: str) -> str:
    count = browser.run("return document.querySelectorAll('.assistant').length;")
    browser.type("#question", question)
    browser.click("#ask")
    state = browser.wait_for(
        f"document.querySelectorAll('.assistant').length > {count} && "
        "['done', 'error'].includes(document.body.dataset.state) && document.body.dataset.state")
    assert state == "done", browser.run("return document.getElementById('status').textContent;")
    return browser.run("return Array.from(document.querySelectorAll('.assistant')).pop().textContent;")


def test_page_upload_ask_and_screenshot(server, tmp_path: Path) -> None:
    photo = tmp_path / "photo.png"
    Image.new("RGB", (40, 28), (180, 60, 20)).save(photo)
    shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "CT.dcm")
    client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0)
    with Browser() as browser:
        browser.go(server.root + "/")
        browser.wait_for("document.getElementById('model').textContent === 'micro'")  # /v1/models answered
        browser.run("document.getElementById('max-tokens').value = '8';")
        browser.type("#file", str(photo))
        assert browser.wait_for("document.getElementById('preview').getAttribute('src')").startswith("data:image/png")
        assert browser.run("return document.getElementById('dicom-options').hidden;") is True
        answer = ask(browser, QUESTION)
        url = "data:image/png;base64," + base64.b64encode(photo.read_bytes()).decode()
        expected = client.chat.completions.create(model="micro", max_tokens=8, temperature=0, messages=[
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                         {"type": "text", "text": QUESTION}]}]).choices[0].message.content
        assert answer == expected and answer
        follow_up = ask(browser, "Is it normal?")  # the same conversation, second turn
        assert follow_up and browser.run("return document.querySelectorAll('.message').length;") == 4
        browser.run("location.reload();")  # the conversation is kept per tab
        browser.wait_for("document.querySelectorAll('.message').length === 4")
        browser.wait_for("document.getElementById('preview').getAttribute('src') && "
                         "document.body.dataset.state === 'idle'")
        browser.run("document.getElementById('max-tokens').value = '8';")
        screenshot = browser.screenshot()
        (tmp_path / "page.png").write_bytes(screenshot)

        browser.type("#file", str(tmp_path / "CT.dcm"))  # a DICOM study: window choice, rendered by the server
        browser.wait_for("!document.getElementById('dicom-options').hidden")
        browser.wait_for("document.querySelectorAll('.message').length === 0")  # a new image, a new conversation
        browser.wait_for("document.getElementById('status').textContent === 'DICOM 128×128'")
        browser.run("window.lungPreview = document.getElementById('preview').getAttribute('src');"
                    "const w = document.getElementById('window'); w.value = 'bone';"
                    "w.dispatchEvent(new Event('change'));")
        browser.wait_for("document.getElementById('preview').getAttribute('src') !== window.lungPreview")
        assert ask(browser, "Is this a CT scan?")
        fetched = browser.run("return performance.getEntriesByType('resource').map(e => e.name);")
    assert all(name.startswith(server.root) or name.startswith("data:") for name in fetched)
    picture = Image.open(io.BytesIO(screenshot))
    assert picture.format == "PNG" and picture.size[0] >= 800
